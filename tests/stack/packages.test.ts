// What `npm run stack:up` does about missing Debian packages on different machines.
import { describe, expect, it } from 'vitest';
import { planPackageInstall } from '../../scripts/lib/packages.mjs';

const missing = ['postgresql-15-cron', 'pgtap'];

describe('missing Debian packages', () => {
  it('does nothing when everything is installed', () => {
    expect(planPackageInstall([], { hasAptGet: false, isRoot: false })).toEqual({});
  });

  it('installs them as root with apt-get', () => {
    expect(planPackageInstall(missing, { hasAptGet: true, isRoot: true })).toEqual({ install: missing });
  });

  it('tells a non-root user the exact sudo command', () => {
    const { error, install } = planPackageInstall(missing, { hasAptGet: true, isRoot: false });
    expect(install).toBeUndefined();
    expect(error).toContain('missing Debian packages postgresql-15-cron, pgtap');
    expect(error).toContain('sudo apt-get update && sudo apt-get install -y postgresql-15-cron pgtap');
  });

  it('names the packages and what to install where there is no apt-get', () => {
    const { error, install } = planPackageInstall(missing, { hasAptGet: false, isRoot: true });
    expect(install).toBeUndefined();
    expect(error).toContain('there is no apt-get here');
    expect(error).toContain('PostgreSQL 15 with pg_cron and pgTAP');
    expect(error).toContain('postgresql-15-cron pgtap');
  });
});
