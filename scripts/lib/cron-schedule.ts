// Five-field cron expressions (minute hour day-of-month month day-of-week, in UTC), as pg_cron
// reads them: `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`; day-of-week 0-7
// with 0 and 7 both Sunday; when both day fields are restricted, either may match. The local
// stack's scheduler (scripts/functions-server.ts) uses it to call HTTP jobs on their schedules.

interface Field { min: number; max: number }
const FIELDS: Field[] = [
  { min: 0, max: 59 }, // minute
  { min: 0, max: 23 }, // hour
  { min: 1, max: 31 }, // day of month
  { min: 1, max: 12 }, // month
  { min: 0, max: 7 }, // day of week
];

/** The values a field allows, or throws on a malformed one. */
function values(text: string, { min, max }: Field): Set<number> {
  const allowed = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`bad cron field: ${text}`);
    const [from, to] = m[1] === '*' ? [min, max] : [Number(m[2]), m[3] === undefined ? (m[4] ? max : Number(m[2])) : Number(m[3])];
    const step = m[4] === undefined ? 1 : Number(m[4]);
    if (from < min || to > max || from > to || step < 1) throw new Error(`bad cron field: ${text}`);
    for (let v = from; v <= to; v += step) allowed.add(v);
  }
  return allowed;
}

/** Whether the expression fires in the minute of `date` (UTC). */
export function cronMatches(expression: string, date: Date): boolean {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 5) throw new Error(`a cron expression has five fields: ${expression}`);
  const [minute, hour, dom, month, dow] = parts.map((p, i) => values(p, FIELDS[i]));
  if (dow.has(7)) dow.add(0);
  const dayOfMonth = dom.has(date.getUTCDate());
  const dayOfWeek = dow.has(date.getUTCDay());
  const dayRestricted = parts[2] !== '*' && parts[4] !== '*';
  const dayMatches = dayRestricted ? dayOfMonth || dayOfWeek : dayOfMonth && dayOfWeek;
  return minute.has(date.getUTCMinutes()) && hour.has(date.getUTCHours()) && month.has(date.getUTCMonth() + 1) && dayMatches;
}
