// Files end to end, through the SDK's files module and supabase-js against the local gateway:
// uploads routed by context and checked (size, type, first bytes), downloads, signed and public
// URLs, listing, moves between the stores (one interrupted and resumed), deletion, usage, the
// bulk move for platform admins, and the orphan cleanup through time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANON_KEY, SERVICE_ROLE_KEY } from '../../scripts/lib/config.mjs';
import { apiUrl, backendFor, clientFor, rejection, serviceBackend } from '../support/clients.ts';
import { sql } from '../support/db.ts';
import { startGateway, type Gateway } from '../support/gateway.ts';
import { createUser } from '../support/users.ts';
import { createTeam, objectsUnder, pdf, png, windowsProgram, type Team } from './support.ts';

let team: Team;

beforeAll(async () => {
  team = await createTeam();
});

const bytesOf = async (blob: Blob) => new Uint8Array(await blob.arrayBuffer());

describe('uploading', () => {
  it('stores a customer document privately for a plain member, and gives its bytes back', async () => {
    const member = backendFor(team.member);
    const body = pdf(4096, 'a');
    const file = await member.files.upload({
      organizationId: team.organizationId,
      context: 'customer_document',
      file: body,
      name: 'Signed contract.pdf',
      contentType: 'application/pdf',
    });
    expect(file).toMatchObject({
      organization_id: team.organizationId,
      context: 'customer_document',
      store: 'private',
      status: 'ready',
      file_name: 'Signed contract.pdf',
      content_type: 'application/pdf',
      size_bytes: body.byteLength,
      uploaded_by: team.member.id,
    });
    expect(file.object_name).toBe(`${team.organizationId}/customer_document/${file.id}/Signed_contract.pdf`);
    expect(await bytesOf(await member.files.download(file.id))).toEqual(body);
    // The admin and the owner read it too; the object is where the record says.
    expect(await bytesOf(await backendFor(team.owner).files.download(file))).toEqual(body);
    expect(await objectsUnder('private', `${team.organizationId}/customer_document/${file.id}/`)).toEqual([file.object_name]);
  });

  it('takes a File with its own name and type', async () => {
    const file = await backendFor(team.member).files.upload({
      organizationId: team.organizationId,
      context: 'user_upload',
      file: new File([png(300)], 'Diagram é.png', { type: 'image/png' }),
    });
    expect(file).toMatchObject({ file_name: 'Diagram é.png', content_type: 'image/png', store: 'private', size_bytes: 300 });
  });

  it('publishes a public asset of an admin to the public store, fetched by URL without any token', async () => {
    const admin = backendFor(team.admin);
    expect(await admin.files.storeFor('public_asset', true)).toBe('public');
    expect(await admin.files.storeFor('invoice', true)).toBe('private');
    const body = png(2048);
    const file = await admin.files.upload({
      organizationId: team.organizationId, context: 'public_asset', file: body, name: 'logo.png', contentType: 'image/png', published: true,
    });
    expect(file.store).toBe('public');
    const url = await admin.files.url(file);
    expect(url).toBe(`${apiUrl}/storage/v1/object/public/public/${file.object_name}`);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(body);
  });

  it('refuses a disguised executable, and leaves neither record nor object', async () => {
    const before = await sql`select count(*)::int as n from public.files where organization_id = ${team.organizationId}`;
    const err = await rejection(backendFor(team.member).files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: windowsProgram(), name: 'invoice.pdf', contentType: 'application/pdf',
    }), 'content_type_mismatch');
    expect(err.status).toBe(400);
    await rejection(backendFor(team.member).files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: png(), name: 'picture.pdf', contentType: 'application/pdf',
    }), 'content_type_mismatch');
    const after = await sql`select count(*)::int as n from public.files where organization_id = ${team.organizationId}`;
    expect(after[0].n).toBe(before[0].n);
    expect((await sql`select count(*)::int as n from storage.objects where name like ${`${team.organizationId}/user_upload/%`}
      and name like '%.pdf'`)[0].n).toBe(0);
  });

  it('refuses what the context does not take: type, size, publishing', async () => {
    const member = backendFor(team.member);
    const base = { organizationId: team.organizationId, name: 'x.pdf', contentType: 'application/pdf' };
    await rejection(member.files.upload({ ...base, context: 'invoice', file: png(), name: 'x.png', contentType: 'image/png' }), 'file_type_not_allowed');
    await rejection(member.files.upload({ ...base, context: 'invoice', file: pdf(10 * 1024 * 1024 + 1) }), 'file_too_large');
    await rejection(member.files.upload({ ...base, context: 'invoice', file: pdf(), published: true }), 'not_publishable');
    await rejection(member.files.upload({ ...base, context: 'public_asset', file: png(), name: 'x.png', contentType: 'image/png', published: true }), 'not_authorized');
    await rejection(member.files.upload({ ...base, context: 'no_such_context', file: pdf() }), 'invalid_context');
    await rejection(member.files.upload({ ...base, context: 'user_upload', file: pdf(), name: 'a/b.pdf' }), 'invalid_file_name');
  });

  it('refuses a file over the bucket limit even when its context would take more', async () => {
    // data_export takes 50 MiB, as the private bucket does: one byte more is refused before it is read.
    const res = await fetch(`${apiUrl}/functions/v1/files-upload?organization_id=${team.organizationId}&context=data_export&name=big.zip`, {
      method: 'POST',
      headers: { apikey: ANON_KEY, authorization: `Bearer ${team.owner.token}`, 'content-type': 'application/zip' },
      body: new Uint8Array(50 * 1024 * 1024 + 1),
    });
    expect(res.status).toBe(413);
    await res.arrayBuffer();
  });

  it('refuses strangers and anonymous callers', async () => {
    await rejection(backendFor(team.stranger).files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: pdf(), name: 'x.pdf', contentType: 'application/pdf',
    }), 'not_authorized');
    const anon = await fetch(`${apiUrl}/functions/v1/files-upload?organization_id=${team.organizationId}&context=user_upload&name=x.pdf`, {
      method: 'POST', headers: { apikey: ANON_KEY, authorization: `Bearer ${ANON_KEY}`, 'content-type': 'application/pdf' }, body: pdf(),
    });
    expect(anon.status).toBe(401);
    expect((await anon.json()).error.code).toBe('user_required');
  });
});

describe('reading', () => {
  let privateFileId: string;

  beforeAll(async () => {
    const file = await backendFor(team.member).files.upload({
      organizationId: team.organizationId, context: 'receipt', file: pdf(1000, 'r'), name: 'Receipt 42.pdf', contentType: 'application/pdf',
    });
    privateFileId = file.id;
  });

  it('lists with filters, search, order and pages', async () => {
    const member = backendFor(team.member);
    const receipts = await member.files.list({ organizationId: team.organizationId, context: 'receipt' });
    expect(receipts.map((f) => f.id)).toEqual([privateFileId]);
    expect((await member.files.list({ organizationId: team.organizationId, search: 'receipt 4' })).map((f) => f.id)).toEqual([privateFileId]);
    expect(await member.files.list({ organizationId: team.organizationId, search: '100%' })).toEqual([]);
    const publicOnes = await member.files.list({ organizationId: team.organizationId, store: 'public' });
    expect(publicOnes.every((f) => f.store === 'public')).toBe(true);
    const all = await member.files.list({ organizationId: team.organizationId, order: 'oldest' });
    expect(all.length).toBeGreaterThanOrEqual(3);
    const page = await member.files.list({ organizationId: team.organizationId, order: 'oldest', limit: 1, offset: 1 });
    expect(page.map((f) => f.id)).toEqual([all[1].id]);
    await rejection(member.files.list({ organizationId: team.organizationId, limit: 5000 }), 'invalid_input');
  });

  it('gives a stranger nothing: no records, no bytes, no URLs', async () => {
    const stranger = backendFor(team.stranger);
    expect(await stranger.files.list({ organizationId: team.organizationId })).toEqual([]);
    expect(await stranger.files.get(privateFileId)).toBeNull();
    await rejection(stranger.files.download(privateFileId), 'file_not_found');
    // Even knowing the object's name, Storage refuses them.
    const [{ object_name: objectName }] = await sql`select object_name from public.files where id = ${privateFileId}`;
    const direct = await clientFor(team.stranger.token).storage.from('private').download(objectName);
    expect(direct.error).not.toBeNull();
    const signed = await clientFor(team.stranger.token).storage.from('private').createSignedUrl(objectName, 60);
    expect(signed.error).not.toBeNull();
  });

  it('signs URLs for private files, which work without a token and expire', async () => {
    const member = backendFor(team.member);
    const url = await member.files.url(privateFileId, { expiresIn: 60 });
    const ok = await fetch(url);
    expect(ok.status).toBe(200);
    expect(new Uint8Array(await ok.arrayBuffer())).toEqual(pdf(1000, 'r'));
    // Without the signature, the same object is refused.
    const [{ object_name: objectName }] = await sql`select object_name from public.files where id = ${privateFileId}`;
    const bare = await fetch(`${apiUrl}/storage/v1/object/public/private/${objectName}`);
    expect(bare.status).toBeGreaterThanOrEqual(400);
    await bare.arrayBuffer();
    const anonymous = await fetch(`${apiUrl}/storage/v1/object/private/${objectName}`, { headers: { apikey: ANON_KEY } });
    expect(anonymous.status).toBeGreaterThanOrEqual(400);
    await anonymous.arrayBuffer();

    const shortLived = await member.files.url(privateFileId, { expiresIn: 1 });
    await new Promise((r) => setTimeout(r, 2100));
    const expired = await fetch(shortLived);
    expect(expired.status).toBe(400);
    expect(await expired.json()).toMatchObject({ error: 'InvalidJWT', message: expect.stringMatching(/exp/i) });
    await rejection(member.files.url(privateFileId, { expiresIn: 0 }), 'invalid_input');
  });

  it('reports usage per store to owners and admins, not to plain members', async () => {
    const usage = await backendFor(team.owner).files.usage(team.organizationId);
    const total = await sql<{ store: string; objects: number; bytes: number }[]>`
      select bucket_id as store, count(*)::int as objects, sum((metadata->>'size')::bigint)::int as bytes
      from storage.objects where name like ${`${team.organizationId}/%`} group by bucket_id order by 1`;
    expect(usage.filter((u) => u.objects > 0)).toEqual(total);
    expect(await backendFor(team.admin).files.usage(team.organizationId)).toEqual(usage);
    await rejection(backendFor(team.member).files.usage(team.organizationId), 'not_authorized');
    await rejection(backendFor(team.stranger).files.usage(team.organizationId), 'not_authorized');
  });
});

describe('moving between the stores', () => {
  it('publishes and unpublishes a knowledge-base attachment: never in both stores, never in neither', async () => {
    const admin = backendFor(team.admin);
    const body = png(1500);
    const file = await admin.files.upload({
      organizationId: team.organizationId, context: 'kb_article', file: body, name: 'chart.png', contentType: 'image/png',
    });
    expect(file.store).toBe('private');
    const published = await admin.files.move(file.id, 'public');
    expect(published).toMatchObject({ id: file.id, store: 'public', status: 'ready', object_name: file.object_name });
    expect(await objectsUnder('private', file.object_name)).toEqual([]);
    expect(await objectsUnder('public', file.object_name)).toEqual([file.object_name]);
    const res = await fetch(await admin.files.url(file.id));
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(body);
    // Moving to where it is changes nothing.
    expect(await admin.files.move(file.id, 'public')).toMatchObject({ store: 'public', status: 'ready' });

    const unpublished = await admin.files.move(file.id, 'private');
    expect(unpublished.store).toBe('private');
    expect(await objectsUnder('public', file.object_name)).toEqual([]);
    const gone = await fetch(`${apiUrl}/storage/v1/object/public/public/${file.object_name}`);
    expect(gone.status).toBeGreaterThanOrEqual(400);
    await gone.arrayBuffer();
    expect(await bytesOf(await admin.files.download(file.id))).toEqual(body);
    const events = await sql`select payload from private.domain_events where type = 'file.moved' and payload->>'file_id' = ${file.id} order by id`;
    expect(events.map((e) => [e.payload.from, e.payload.to, e.payload.moved_by])).toEqual([
      ['private', 'public', team.admin.id],
      ['public', 'private', team.admin.id],
    ]);
  });

  it('refuses plain members, strangers and what is never public', async () => {
    const admin = backendFor(team.admin);
    const doc = await admin.files.upload({
      organizationId: team.organizationId, context: 'legal_doc', file: pdf(), name: 'nda.pdf', contentType: 'application/pdf',
    });
    await rejection(admin.files.move(doc.id, 'public'), 'not_publishable');
    await rejection(backendFor(team.member).files.move(doc.id, 'private'), 'not_authorized');
    await rejection(backendFor(team.stranger).files.move(doc.id, 'private'), 'file_not_found');
    await rejection(admin.files.moveAll(team.organizationId, 'private'), 'not_authorized');
  });

  describe('interrupted', () => {
    let crashing: Gateway;
    beforeAll(async () => {
      crashing = await startGateway({ FILES_MOVE_FAULT: 'after_copy' });
    }, 90_000);
    afterAll(async () => {
      await crashing?.stop();
    });

    it('stops after the copy, and run again finishes the move with the object in exactly one store', async () => {
      const owner = backendFor(team.owner);
      const body = png(4000);
      const file = await owner.files.upload({
        organizationId: team.organizationId, context: 'public_asset', file: body, name: 'banner.png', contentType: 'image/png',
      });
      // The move dies between the copy and the switch, as a crash would.
      await rejection(backendFor(team.owner, crashing.url).files.move(file.id, 'public'), 'unknown');
      const [midway] = await sql`select store, status, move_to_store from public.files where id = ${file.id}`;
      expect(midway).toEqual({ store: 'private', status: 'moving', move_to_store: 'public' });
      expect(await objectsUnder('private', file.object_name)).toHaveLength(1);
      expect(await objectsUnder('public', file.object_name)).toHaveLength(1);
      // Both copies are referenced while the move is under way: the cleanup removes neither.
      const [{ n }] = await sql`select count(*)::int as n from private.orphan_objects(now() + interval '10 days') where name = ${file.object_name}`;
      expect(n).toBe(0);
      // Meanwhile the file cannot start moving the other way.
      await rejection(owner.files.move(file.id, 'private'), 'file_not_ready');

      const resumed = await owner.files.move(file.id, 'public');
      expect(resumed).toMatchObject({ store: 'public', status: 'ready', move_to_store: null });
      expect(await objectsUnder('private', file.object_name)).toEqual([]);
      expect(await objectsUnder('public', file.object_name)).toEqual([file.object_name]);
      expect(new Uint8Array(await (await fetch(await owner.files.url(file.id))).arrayBuffer())).toEqual(body);
    }, 60_000);
  });

  it('moves every file of an organization in bulk for a platform admin', async () => {
    const operator = await createUser(undefined, { platform_admin: true });
    const admin = backendFor(team.admin);
    const assets = await Promise.all([1, 2].map((i) => admin.files.upload({
      organizationId: team.organizationId, context: 'public_asset', file: png(100 + i), name: `asset-${i}.png`, contentType: 'image/png',
    })));
    const result = await backendFor(operator).files.moveAll(team.organizationId, 'public');
    expect(result.files.map((f) => f.id)).toEqual(expect.arrayContaining(assets.map((a) => a.id)));
    const [{ n }] = await sql`select count(*)::int as n from public.files where id = any(${assets.map((a) => a.id)}::uuid[]) and store = 'public'`;
    expect(n).toBe(2);
    // Files that are never public stay where they are (the bulk move is for publishable ones);
    // the platform admin sees the organization's files and usage.
    expect((await backendFor(operator).files.list({ organizationId: team.organizationId })).length).toBeGreaterThan(2);
    expect((await backendFor(operator).files.usage(team.organizationId)).length).toBe(2);
  });
});

describe('deleting', () => {
  it('removes the object and the record for an admin, with the event naming them; not for a plain member', async () => {
    const member = backendFor(team.member);
    const file = await member.files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: pdf(), name: 'old.pdf', contentType: 'application/pdf',
    });
    await rejection(member.files.delete(file.id), 'not_authorized');
    await rejection(backendFor(team.stranger).files.delete(file.id), 'file_not_found');
    await backendFor(team.admin).files.delete(file.id);
    expect(await member.files.get(file.id)).toBeNull();
    expect(await objectsUnder('private', file.object_name)).toEqual([]);
    const [event] = await sql`select payload from private.domain_events where type = 'file.deleted' and payload->>'file_id' = ${file.id}`;
    expect(event.payload.deleted_by).toBe(team.admin.id);
    await rejection(backendFor(team.admin).files.delete(file.id), 'file_not_found');
  });
});

describe('orphan cleanup', () => {
  const cleanup = async () => {
    const res = await fetch(`${apiUrl}/functions/v1/files-cleanup`, {
      method: 'POST',
      headers: { apikey: SERVICE_ROLE_KEY, authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ job: 'files-cleanup' }),
    });
    expect(res.status).toBe(200);
    return (await res.json()) as { removed: number; missing: string[] };
  };

  it('removes objects nothing references once past the grace period, never a referenced one, and reports lost objects', async () => {
    const owner = clientFor(team.owner.token);
    // An object uploaded straight to Storage, that no record names (an upload whose record is gone).
    const orphanName = `${team.organizationId}/user_upload/00000000-0000-4000-8000-000000000001/stray.pdf`;
    const fresh = `${team.organizationId}/user_upload/00000000-0000-4000-8000-000000000002/arriving.pdf`;
    for (const name of [orphanName, fresh]) {
      const { error } = await owner.storage.from('private').upload(name, new Blob([pdf()], { type: 'application/pdf' }));
      expect(error).toBeNull();
    }
    const kept = await backendFor(team.owner).files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: pdf(), name: 'kept.pdf', contentType: 'application/pdf',
    });
    const lost = await backendFor(team.owner).files.upload({
      organizationId: team.organizationId, context: 'user_upload', file: pdf(), name: 'lost.pdf', contentType: 'application/pdf',
    });
    // Two days pass for the stray object and the kept file; the lost file's object vanishes
    // (deleted behind the backend's back).
    await sql`update storage.objects set created_at = now() - interval '2 days'
              where bucket_id = 'private' and name in (${orphanName}, ${kept.object_name})`;
    await sql`delete from storage.objects where bucket_id = 'private' and name = ${lost.object_name}`;

    const first = await cleanup();
    expect(first.removed).toBeGreaterThanOrEqual(1);
    expect(first.missing).toContain(lost.id);
    expect(await objectsUnder('private', orphanName)).toEqual([]);
    const download = await owner.storage.from('private').download(orphanName);
    expect(download.error).not.toBeNull();
    // Referenced, or within the grace period: kept.
    expect(await objectsUnder('private', kept.object_name)).toEqual([kept.object_name]);
    expect(await objectsUnder('private', fresh)).toEqual([fresh]);
    expect(await bytesOf(await backendFor(team.owner).files.download(kept.id))).toEqual(pdf());
    // A lost object is reported, its record never deleted.
    expect(await backendFor(team.owner).files.get(lost.id)).not.toBeNull();
    const [run] = await sql`select outcome, rows_affected from private.job_runs where job_name = 'files-cleanup' order by id desc limit 1`;
    expect(run.outcome).toBe('succeeded');
    expect(Number(run.rows_affected)).toBe(first.removed);
  });

  it('is for the service role only', async () => {
    const res = await fetch(`${apiUrl}/functions/v1/files-cleanup`, {
      method: 'POST', headers: { apikey: ANON_KEY, authorization: `Bearer ${team.owner.token}` },
    });
    expect(res.status).toBe(403);
    await res.arrayBuffer();
  });

  it('is in the job registry, hourly', async () => {
    const [job] = await sql`select schedule, kind, command from private.jobs where name = 'files-cleanup'`;
    expect(job).toEqual({ schedule: '27 * * * *', kind: 'http', command: 'files-cleanup' });
  });
});

describe('the service role', () => {
  it('manages any organization\'s files through the SDK', async () => {
    const service = serviceBackend();
    const file = await backendFor(team.member).files.upload({
      organizationId: team.organizationId, context: 'invoice', file: pdf(), name: 'inv-1.pdf', contentType: 'application/pdf',
    });
    expect((await service.files.get(file.id))?.id).toBe(file.id);
    await service.files.delete(file.id);
    expect(await service.files.get(file.id)).toBeNull();
  });
});
