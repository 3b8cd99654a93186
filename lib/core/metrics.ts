// Counters and gauges for /metrics (Prometheus text format) and the status page. Services register what they
// count; gauges are read when rendered, so nothing has to be kept in sync by hand.
export type Labels = Record<string, string>;

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge";
  values: Map<string, { labels: Labels; value: number | (() => number) }>;
  /** Gauges whose label sets come and go (a printer's nozzles, its AMS trays): read whole at each render. */
  collectors: Set<() => Sample[]>;
}

export interface Sample {
  labels: Labels;
  value: number;
}

export interface Counter {
  inc(amount?: number): void;
  readonly value: number;
}

export interface Metrics {
  counter(name: string, help: string, labels?: Labels): Counter;
  gauge(name: string, help: string, labels: Labels, read: () => number): () => void;
  /** A gauge family read whole when rendered; returns its removal. */
  gauges(name: string, help: string, read: () => Sample[]): () => void;
  render(): string;
  value(name: string, labels?: Labels): number | undefined;
}

const key = (labels: Labels) => JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
const escape = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

const samplesOf = (f: Family): Sample[] => [...f.collectors].flatMap((read) => read());

export function createMetrics(): Metrics {
  const families = new Map<string, Family>();
  const family = (name: string, help: string, type: Family["type"]) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, help, type, values: new Map(), collectors: new Set() }));
    return f;
  };
  return {
    counter(name, help, labels = {}) {
      const f = family(name, help, "counter");
      const k = key(labels);
      let entry = f.values.get(k);
      if (!entry) f.values.set(k, (entry = { labels, value: 0 }));
      const e = entry;
      return {
        inc(amount = 1) {
          e.value = (e.value as number) + amount;
        },
        get value() {
          return e.value as number;
        },
      };
    },
    gauge(name, help, labels, read) {
      const f = family(name, help, "gauge");
      const k = key(labels);
      f.values.set(k, { labels, value: read });
      return () => f.values.delete(k);
    },
    gauges(name, help, read) {
      const f = family(name, help, "gauge");
      f.collectors.add(read);
      return () => f.collectors.delete(read);
    },
    render() {
      const out: string[] = [];
      for (const f of families.values()) {
        out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
        for (const { labels, value } of [...f.values.values(), ...samplesOf(f)]) {
          const text = Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`).join(",");
          const n = typeof value === "function" ? value() : value;
          out.push(`${f.name}${text ? `{${text}}` : ""} ${Number.isFinite(n) ? n : 0}`);
        }
      }
      return out.join("\n") + "\n";
    },
    value(name, labels = {}) {
      const f = families.get(name);
      const entry = f?.values.get(key(labels)) ?? (f ? samplesOf(f).find((s) => key(s.labels) === key(labels)) : undefined);
      if (!entry) return undefined;
      return typeof entry.value === "function" ? entry.value() : entry.value;
    },
  };
}
