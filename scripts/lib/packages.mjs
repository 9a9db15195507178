// What the stack does about missing Debian packages: nothing, install them (as root, with
// apt-get), or stop with a message that names them and the command that installs them.
// Kept pure so the messages are tested (tests/stack/packages.test.ts).

/**
 * @param {string[]} missing Debian package names not installed
 * @param {{ hasAptGet: boolean, isRoot: boolean }} machine
 * @returns {{ install?: string[], error?: string }}
 */
export function planPackageInstall(missing, { hasAptGet, isRoot }) {
  if (missing.length === 0) return {};
  if (!hasAptGet) {
    return {
      error: `missing ${missing.join(', ')} and there is no apt-get here. Install PostgreSQL 15 with pg_cron and pgTAP ` +
        `(Debian/Ubuntu packages: ${missing.join(' ')}), then run this again.`,
    };
  }
  if (!isRoot) {
    return {
      error: `missing Debian packages ${missing.join(', ')}. Install them once with:\n` +
        `  sudo apt-get update && sudo apt-get install -y ${missing.join(' ')}`,
    };
  }
  return { install: missing };
}
