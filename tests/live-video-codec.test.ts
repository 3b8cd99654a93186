// The pieces under live video, against FFmpeg as the independent peer: the MP4 box splitter and fragment keeper
// on FFmpeg's own fragmented MP4 (key fragments where ffprobe sees key packets, the codec string ffprobe's
// profile and level give), and the RTP H.264 depacketizer (RFC 6184) on x264's output, packetized here as single
// NAL units, STAP-A and FU-A: the key frame it keeps decodes to a JPEG with FFmpeg.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBoxSplitter, createFmp4Keeper, type Box, type Fragment } from "../lib/rtsp/fmp4.ts";
import { createKeyFrameKeeper } from "../lib/rtsp/h264.ts";
import { decodeKeyFrame } from "../lib/rtsp/h264-snapshot.ts";
import { remuxArgs } from "../lib/rtsp/ffmpeg.ts";
import { captureLogs, processLogger, setupLogging } from "../lib/log.ts";
import { createLiveVideo } from "../lib/rtsp/fmp4-live.ts";
import { chmodSync } from "node:fs";
import { run } from "./rtsp-fixtures.ts";

const work = mkdtempSync(join(tmpdir(), "pp-live-codec-"));
const log = processLogger("test");
let h264: Buffer;
let fmp4: Buffer;

beforeAll(async () => {
  const source = join(work, "source.h264");
  // 3 s at 15 fps, a key frame every 15 frames, an access unit delimiter in front of every picture.
  const made = await run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=15", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast",
    "-tune", "zerolatency", "-g", "15", "-x264-params", "aud=1", "-pix_fmt", "yuv420p", "-f", "h264", source]);
  expect(made.code).toBe(0);
  h264 = readFileSync(source);
  // The same rewrap our remuxing FFmpeg does (its output options), from the file instead of our RTSP server.
  const args = remuxArgs("x");
  const output = args.slice(args.indexOf("-an"));
  output[output.length - 1] = join(work, "out.mp4");
  const remuxed = await run(["ffmpeg", "-v", "error", "-f", "h264", "-framerate", "15", "-i", source, ...output]);
  expect(remuxed.code).toBe(0);
  fmp4 = readFileSync(join(work, "out.mp4"));
}, 30_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("fragmented MP4 boxes", () => {
  test("cut in 997-byte pieces, FFmpeg's output gives an init segment, the codec ffprobe names, and key fragments where ffprobe sees key packets", async () => {
    const keeper = createFmp4Keeper();
    const fragments: Fragment[] = [];
    const split = createBoxSplitter((box) => {
      const f = keeper.add(box);
      if (f) fragments.push(f);
    }, (why) => {
      throw new Error(why);
    });
    for (let i = 0; i < fmp4.length; i += 997) split(fmp4.subarray(i, i + 997));
    expect(keeper.init!.subarray(4, 8).toString("latin1")).toBe("ftyp");
    const probe = await run(["ffprobe", "-v", "error", "-show_entries", "stream=profile,level", "-of", "json", join(work, "out.mp4")]);
    const { profile, level } = JSON.parse(probe.stdout).streams[0];
    expect(profile).toBe("Constrained Baseline"); // profile_idc 66 (0x42), constraint_set1 (0x40) among the flags
    expect(keeper.codec).toMatch(new RegExp(`^avc1\\.42[0-9a-f]{2}${level.toString(16).padStart(2, "0")}$`));
    const packets = await run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=flags", "-of", "csv=p=0", join(work, "out.mp4")]);
    const keyPackets = packets.stdout.trim().split("\n").filter((f) => f.startsWith("K")).length;
    expect(keyPackets).toBe(3);
    expect(fragments.filter((f) => f.key).length).toBe(keyPackets);
    expect(fragments[0]!.key).toBe(true);
    expect(fragments.length).toBeGreaterThan(keyPackets); // short fragments between the key frames, too
    // What a viewer joining now gets starts at the last key fragment.
    const lastKey = fragments.map((f) => f.key).lastIndexOf(true);
    expect(keeper.sinceKey).toEqual(fragments.slice(lastKey));
  });

  test("a 64-bit box size is read; a box over the limit or shorter than its header means lost sync, reported once", () => {
    const boxes: Box[] = [];
    const lost: string[] = [];
    const split = createBoxSplitter((b) => boxes.push(b), (why) => lost.push(why), 1024);
    const large = Buffer.alloc(16 + 10);
    large.writeUInt32BE(1, 0);
    large.write("mdat", 4, "latin1");
    large.writeBigUInt64BE(26n, 8);
    split(large.subarray(0, 9));
    split(large.subarray(9));
    expect(boxes.map((b) => [b.type, b.bytes.length])).toEqual([["mdat", 26]]);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(4096, 0);
    huge.write("moof", 4, "latin1");
    split(huge);
    split(large); // after lost sync nothing more is cut: the producer is restarted
    expect(lost).toEqual(['a "moof" box of 4096 bytes (more than 1024)']);
    expect(boxes.length).toBe(1);
    const short: string[] = [];
    createBoxSplitter(() => {}, (why) => short.push(why))(Buffer.from([0, 0, 0, 4, 0x6d, 0x6f, 0x6f, 0x76]));
    expect(short).toEqual(['a "moov" box of 4 bytes']);
  });
});

/** The NAL units of an Annex B stream, grouped into access units at each access unit delimiter. */
function accessUnits(stream: Buffer): Buffer[][] {
  const nals: Buffer[] = [];
  let start = -1;
  for (let i = 0; i + 3 <= stream.length; i++) {
    if (stream[i] === 0 && stream[i + 1] === 0 && stream[i + 2] === 1) {
      if (start >= 0) nals.push(stream.subarray(start, stream[i - 1] === 0 ? i - 1 : i));
      start = i + 3;
      i += 2;
    }
  }
  if (start >= 0) nals.push(stream.subarray(start));
  const units: Buffer[][] = [];
  for (const nal of nals) {
    if ((nal[0]! & 0x1f) === 9 || !units.length) units.push([]);
    units[units.length - 1]!.push(nal);
  }
  return units;
}

/** RTP packets for one access unit: SPS+PPS (when `withParameterSets`) in a STAP-A, small NALs alone, large ones in FU-A. */
function packetize(unit: Buffer[], seq: { n: number }, ts: number, withParameterSets: boolean, mtu = 1200): Buffer[] {
  const header = (marker: boolean) => {
    const h = Buffer.alloc(12);
    h[0] = 0x80;
    h[1] = (marker ? 0x80 : 0) | 96;
    h.writeUInt16BE(seq.n++ & 0xffff, 2);
    h.writeUInt32BE(ts >>> 0, 4);
    h.writeUInt32BE(0x1234, 8);
    return h;
  };
  const payloads: Buffer[] = [];
  const type = (n: Buffer) => n[0]! & 0x1f;
  const sets = unit.filter((n) => type(n) === 7 || type(n) === 8);
  if (sets.length && withParameterSets) {
    payloads.push(Buffer.concat([Buffer.from([(sets[0]![0]! & 0x60) | 24]), ...sets.flatMap((n) => [Buffer.from([n.length >> 8, n.length & 0xff]), n])]));
  }
  for (const nal of unit) {
    if (type(nal) === 7 || type(nal) === 8 || type(nal) === 9) continue;
    if (nal.length <= mtu) {
      payloads.push(nal);
      continue;
    }
    const body = nal.subarray(1);
    for (let at = 0; at < body.length; at += mtu) {
      const first = at === 0;
      const last = at + mtu >= body.length;
      payloads.push(Buffer.concat([Buffer.from([(nal[0]! & 0xe0) | 28, (first ? 0x80 : 0) | (last ? 0x40 : 0) | type(nal)]), body.subarray(at, at + mtu)]));
    }
  }
  return payloads.map((p, i) => Buffer.concat([header(i === payloads.length - 1), p]));
}

describe("H.264 key frames out of RTP (RFC 6184)", () => {
  const packetsOf = (withParameterSets: boolean, lose?: (unit: number, packet: number) => boolean) => {
    const seq = { n: 1000 };
    return accessUnits(h264).flatMap((unit, u) => packetize(unit, seq, u * 6000, withParameterSets).filter((_, p) => !lose?.(u, p)));
  };
  const idrUnits = () => accessUnits(h264).map((u, i) => (u.some((n) => (n[0]! & 0x1f) === 5) ? i : -1)).filter((i) => i >= 0);

  test("STAP-A parameter sets and FU-A slices give a key frame FFmpeg decodes to one JPEG", async () => {
    const keeper = createKeyFrameKeeper();
    for (const packet of packetsOf(true)) keeper.push(packet);
    expect(keeper.keyFrames).toBe(idrUnits().length);
    const jpeg = await decodeKeyFrame("ffmpeg", log, keeper.latest()!.annexB);
    const file = join(work, "key.jpg");
    writeFileSync(file, jpeg);
    expect((await run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", file])).stdout.trim()).toBe("mjpeg,640,360");
  }, 20_000);

  test("without SPS/PPS in the stream, the SDP's sprop-parameter-sets stand in; without either no key frame is kept", async () => {
    const [unit] = accessUnits(h264);
    const sps = unit!.find((n) => (n[0]! & 0x1f) === 7)!;
    const pps = unit!.find((n) => (n[0]! & 0x1f) === 8)!;
    const bare = createKeyFrameKeeper();
    for (const packet of packetsOf(false)) bare.push(packet);
    expect(bare.latest()).toBeUndefined();
    const keeper = createKeyFrameKeeper();
    keeper.setSdp(`m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=${sps.toString("base64")},${pps.toString("base64")}`);
    for (const packet of packetsOf(false)) keeper.push(packet);
    expect(keeper.keyFrames).toBe(idrUnits().length);
    expect((await decodeKeyFrame("ffmpeg", log, keeper.latest()!.annexB)).subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
  }, 20_000);

  test("the same SPS at every key frame is no change; a new SPS is, once it comes again at the next key frame", () => {
    const spsOf = (unit: Buffer[]) => unit.find((n) => (n[0]! & 0x1f) === 7);
    const keyUnits = accessUnits(h264).filter(spsOf);
    expect(keyUnits.length).toBeGreaterThan(2); // several key frames, each with its SPS
    /** The key frames with their SPS's last byte xor `flip(i)` (0: as encoded), packetized and pushed. */
    const push = (keeper: ReturnType<typeof createKeyFrameKeeper>, flip: (i: number) => number, from: number) => {
      const seq = { n: from };
      for (const [i, unit] of keyUnits.entries()) {
        const changed = unit.map((n) => ((n[0]! & 0x1f) === 7 ? Buffer.concat([n.subarray(0, -1), Buffer.from([n[n.length - 1]! ^ flip(i)])]) : n));
        for (const packet of packetize(changed, seq, from * 100 + i * 6000, true)) keeper.push(packet);
      }
    };
    const keeper = createKeyFrameKeeper();
    let told = 0;
    keeper.onParametersChange(() => told++);
    push(keeper, () => 0, 1000);
    expect(keeper.parameterChanges).toBe(0);
    // A new picture size or profile, as far as we can tell: another SPS from then on.
    push(keeper, () => 1, 5000);
    expect(keeper.parameterChanges).toBe(1);
    expect(told).toBe(1);
    // An SPS that differs at every key frame (or flips back and forth) settles on nothing: no change, no restart.
    const restless = createKeyFrameKeeper();
    push(restless, () => 0, 9000);
    push(restless, (i) => (i % 2) + 1, 13000);
    push(restless, (i) => (i % 3) * 2, 17000);
    expect(restless.parameterChanges).toBe(0);
  });

  test("a key frame with a lost packet is not kept: the latest whole one stays", () => {
    const idrs = idrUnits();
    const keeper = createKeyFrameKeeper();
    for (const packet of packetsOf(true, (u, p) => u === idrs[idrs.length - 1] && p === 2)) keeper.push(packet);
    expect(keeper.keyFrames).toBe(idrs.length - 1);
  });
});

/** Runs a live video on `ffmpeg` (a stand-in script) with one viewer until it has made `runs` runs (or `waitMs`). */
async function runLiveVideo(ffmpeg: string, options: Partial<Parameters<typeof createLiveVideo>[0]>, runs: number, check: (live: ReturnType<typeof createLiveVideo>) => void, waitMs = 10_000): Promise<void> {
  const live = createLiveVideo({ log, ffmpeg, input: () => "rtsp://127.0.0.1:1/x", backoffMinMs: 200, ...options });
  live.start();
  const release = live.claim();
  try {
    const deadline = Date.now() + waitMs;
    while (live.runs < runs && Date.now() < deadline) await Bun.sleep(50);
    check(live);
  } finally {
    release();
    await live.stop();
  }
}

/** A stand-in for FFmpeg: a shell script in the work directory. */
function fakeFfmpeg(name: string, script: string): string {
  const fake = join(work, name);
  writeFileSync(fake, `#!/bin/sh\n${script}`);
  chmodSync(fake, 0o755);
  return fake;
}

describe("the remuxing FFmpeg's output out of sync", () => {
  test("a box larger than any video is logged and that FFmpeg is restarted", async () => {
    // Stands in for an FFmpeg whose stdout is not MP4: a box header claiming 2 GiB, then nothing.
    const fake = fakeFfmpeg("fake-ffmpeg.sh", "printf '\\177\\377\\377\\377moov'\nexec sleep 30\n");
    setupLogging("warn", { quiet: true });
    const logs = captureLogs();
    try {
      await runLiveVideo(fake, {}, 2, (live) => {
        expect(live.runs).toBeGreaterThanOrEqual(2);
        expect(logs.lines.some((l) => l.includes(`the remuxing FFmpeg's output lost sync (a "moov" box of 2147483647 bytes (more than ${16 * 1024 * 1024})); restarting it`))).toBe(true);
        expect(live.joining()).toBeUndefined(); // nobody is handed a broken stream
      });
    } finally {
      logs.stop();
    }
  }, 20_000);
});

describe("a remuxing FFmpeg that writes nothing", () => {
  /** Stands in for a wedged FFmpeg: it runs and writes nothing. */
  const silentFfmpeg = () => fakeFfmpeg("silent-ffmpeg.sh", "exec sleep 30\n");

  test("is restarted, with a log line, while the camera's video comes in", async () => {
    setupLogging("warn", { quiet: true });
    const logs = captureLogs();
    try {
      await runLiveVideo(silentFfmpeg(), { lastPacketAt: () => performance.now(), stallTimeoutMs: 1_000 }, 2, (live) => {
        expect(live.runs).toBeGreaterThanOrEqual(2);
        expect(live.stalls).toBeGreaterThanOrEqual(1);
        expect(logs.lines.some((l) => /the remuxing FFmpeg wrote nothing for \d+ s while the camera sent video; restarting it/.test(l))).toBe(true);
      });
    } finally {
      logs.stop();
    }
  }, 20_000);

  test("after the camera was away longer than the timeout, it gets the whole timeout again once video is back", async () => {
    // Away for the first 3 s, then sending; the timeout is 2 s and the watchdog looks every second: a restart is due
    // 1-2 s after the video came back, not at the first look after it (which would find 3 s of silence).
    const started = performance.now();
    const lastPacketAt = () => (performance.now() - started < 3_000 ? 0 : performance.now());
    await runLiveVideo(silentFfmpeg(), { lastPacketAt, stallTimeoutMs: 2_000 }, 2, (live) => {
      expect(live.runs).toBeGreaterThanOrEqual(2);
      expect(performance.now() - started).toBeGreaterThan(3_800);
    });
  }, 20_000);

  test("is left alone while the camera sends nothing (an away printer is not FFmpeg's fault)", async () => {
    // Waits 2.5 s for a second run that must not come; the watchdog would have fired after 0.5 s.
    await runLiveVideo(silentFfmpeg(), { lastPacketAt: () => 0, stallTimeoutMs: 500 }, 2, (live) => {
      expect(live.runs).toBe(1);
      expect(live.stalls).toBe(0);
      expect(live.state).toBe("connected");
    }, 2_500);
  }, 20_000);
});
