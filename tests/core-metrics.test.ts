// /metrics text: counters and gauges in Prometheus format, gauges read when rendered, labels escaped.
import { describe, expect, test } from "bun:test";
import { createMetrics } from "../lib/core/metrics.ts";

describe("metrics", () => {
  test("render counters and gauges with HELP and TYPE lines", () => {
    const m = createMetrics();
    const frames = m.counter("pandaproxy_frames_total", "Camera frames received", { printer: "p1s" });
    frames.inc();
    frames.inc(4);
    let viewers = 2;
    m.gauge("pandaproxy_clients", "Clients connected", { printer: "p1s", service: "chamber" }, () => viewers);
    viewers = 3; // read at render time
    expect(m.render()).toBe(
      [
        "# HELP pandaproxy_frames_total Camera frames received",
        "# TYPE pandaproxy_frames_total counter",
        'pandaproxy_frames_total{printer="p1s"} 5',
        "# HELP pandaproxy_clients Clients connected",
        "# TYPE pandaproxy_clients gauge",
        'pandaproxy_clients{printer="p1s",service="chamber"} 3',
        "",
      ].join("\n"),
    );
    expect(m.value("pandaproxy_frames_total", { printer: "p1s" })).toBe(5);
    expect(m.value("pandaproxy_clients", { service: "chamber", printer: "p1s" })).toBe(3);
    expect(m.value("pandaproxy_clients", { printer: "other" })).toBeUndefined();
  });

  test("the same name and labels give the same counter; labels are escaped; no labels render bare", () => {
    const m = createMetrics();
    m.counter("c", "help", { a: "1", b: "2" }).inc();
    m.counter("c", "help", { b: "2", a: "1" }).inc();
    expect(m.value("c", { a: "1", b: "2" })).toBe(2);
    m.counter("odd", "help", { name: 'say "hi"\\\n' }).inc();
    m.counter("bare", "help").inc(7);
    const text = m.render();
    expect(text).toContain('odd{name="say \\"hi\\"\\\\\\n"} 1');
    expect(text).toContain("\nbare 7\n");
  });

  test("a removed gauge disappears; a gauge that is not a finite number renders 0", () => {
    const m = createMetrics();
    const remove = m.gauge("g", "help", { x: "1" }, () => NaN);
    expect(m.render()).toContain('g{x="1"} 0');
    remove();
    expect(m.render()).not.toContain('g{x="1"}');
  });
});
