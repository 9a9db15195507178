// How much memory a local process holds, for tests that check a server streams rather than
// buffers: the process listening on a TCP port (found through /proc, Linux only), its resident
// set size, and its peak since a reset (VmHWM, reset through clear_refs where we may write it).
import fs from 'node:fs';

/** The pid of the process listening on 127.0.0.1:<port>, or null (not Linux, not ours, not found). */
export function pidListeningOn(port: number): number | null {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const localPort = parseInt(cols[1].split(':')[1] ?? '', 16);
      if (localPort === port && cols[3] === '0A') inodes.add(cols[9]); // 0A: LISTEN
    }
  }
  if (inodes.size === 0) return null;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const target = fs.readlinkSync(`/proc/${entry}/fd/${fd}`);
        const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        if (inode && inodes.has(inode)) return Number(entry);
      } catch { /* closed meanwhile */ }
    }
  }
  return null;
}

function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1];
  if (!kb) throw new Error(`no ${field} for process ${pid}`);
  return Number(kb) * 1024;
}

/** Resident set size in bytes. */
export const rss = (pid: number): number => statusField(pid, 'VmRSS');

/**
 * Resets the process's peak RSS to its current RSS (echo 5 > clear_refs); false where that is
 * not allowed, and the peak then covers the process's whole life.
 */
export function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Peak resident set size in bytes (since the last resetPeak). */
export const peakRss = (pid: number): number => statusField(pid, 'VmHWM');
