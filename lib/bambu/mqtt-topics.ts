// MQTT topic filters as the 3.1.1 specification defines them (section 4.7): validation and matching with `+`
// and `#`, and the two topics a Bambu printer has.

export const reportTopic = (serial: string) => `device/${serial}/report`;
export const requestTopic = (serial: string) => `device/${serial}/request`;

/** A filter is valid when `#` is alone and last in its level, and `+` fills a whole level. */
export function validFilter(filter: string): boolean {
  if (filter.length === 0 || filter.length > 65535 || filter.includes("\u0000")) return false;
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) return false;
    if (level.includes("+") && level !== "+") return false;
  }
  return true;
}

/** Whether `topic` (no wildcards) matches `filter`. Topics starting with `$` do not match leading wildcards. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  if (topic.startsWith("$") && (f[0] === "+" || f[0] === "#")) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === "#") return true;
    if (i >= t.length) return false;
    if (level !== "+" && level !== t[i]) return false;
  }
  return f.length === t.length;
}
