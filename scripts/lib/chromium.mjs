// Headless Chromium for the browser tests (tests/email/mailbox-page.test.ts drives it with
// playwright-core): Debian's `chromium` package, installed with apt-get when missing, as the
// stack installs Postgres (planPackageInstall: as root it installs, otherwise it names the command).
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { planPackageInstall } from './packages.mjs';

export const CHROMIUM_PATH = '/usr/bin/chromium';
const PACKAGE = 'chromium';
const say = (msg) => console.log(`[chromium] ${msg}`);

const hasAptGet = () => spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;

/**
 * Makes sure CHROMIUM_PATH exists, installing the Debian package `chromium` when it does not.
 * Never throws: answers `{ path }` when Chromium is there, or `{ error }` (also printed) with what
 * to do, so the caller's run goes on and the browser tests fail naming it.
 * @returns {{ path?: string, error?: string }}
 */
export function ensureChromium() {
  if (fs.existsSync(CHROMIUM_PATH)) return { path: CHROMIUM_PATH };
  const apt = hasAptGet();
  const plan = apt
    ? planPackageInstall([PACKAGE], { hasAptGet: true, isRoot: process.getuid?.() === 0 })
    : { error: `missing ${CHROMIUM_PATH} and there is no apt-get here: install Chromium (Debian/Ubuntu package ${PACKAGE}) for the browser tests` };
  if (plan.error) {
    say(plan.error);
    return { error: plan.error };
  }
  say(`installing the Debian package ${PACKAGE} for the browser tests (apt-get)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', PACKAGE]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    if (r.status !== 0) {
      const error = `apt-get ${args[0]} failed (exit ${r.status}); fix the apt error above, or install ${PACKAGE} yourself`;
      say(error);
      return { error };
    }
  }
  if (!fs.existsSync(CHROMIUM_PATH)) {
    const error = `apt-get installed ${PACKAGE} but ${CHROMIUM_PATH} is not there`;
    say(error);
    return { error };
  }
  return { path: CHROMIUM_PATH };
}
