// The simulated chamber camera's picture: a grainy "build plate" with a moving toolhead, the printer's name and
// the time, drawn with a tiny built-in bitmap font and encoded as a real JPEG (jpeg-js). Encoding 1280x720 in
// JavaScript takes tens of milliseconds, so one picture is made per second of wall-clock time and reused.
import jpeg from "jpeg-js";

export const DEFAULT_PICTURE_WIDTH = 1280;
export const DEFAULT_PICTURE_HEIGHT = 720;
/** With the grain below this gives ~100 KB at 1280x720, about what a P1S sends. */
export const DEFAULT_JPEG_QUALITY = 60;
const GRAIN = 26;
const FONT_SCALE_DIVISOR = 120;

/** 5x7 glyphs: 7 rows of 5 columns, "#" = ink. */
const GLYPHS: Record<string, string> = {
  "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
  "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
  "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
  "3": "####.|....#|....#|.###.|....#|....#|####.",
  "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
  "5": "#####|#....|####.|....#|....#|#...#|.###.",
  "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
  "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
  "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
  "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
  A: ".###.|#...#|#...#|#####|#...#|#...#|#...#",
  B: "####.|#...#|#...#|####.|#...#|#...#|####.",
  C: ".###.|#...#|#....|#....|#....|#...#|.###.",
  D: "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
  E: "#####|#....|#....|####.|#....|#....|#####",
  F: "#####|#....|#....|####.|#....|#....|#....",
  G: ".###.|#...#|#....|#.###|#...#|#...#|.####",
  H: "#...#|#...#|#...#|#####|#...#|#...#|#...#",
  I: ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
  J: "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
  K: "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
  L: "#....|#....|#....|#....|#....|#....|#####",
  M: "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
  N: "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
  O: ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
  P: "####.|#...#|#...#|####.|#....|#....|#....",
  Q: ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
  R: "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
  S: ".####|#....|#....|.###.|....#|....#|####.",
  T: "#####|..#..|..#..|..#..|..#..|..#..|..#..",
  U: "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
  V: "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
  W: "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
  X: "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
  Y: "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
  Z: "#####|....#|...#.|..#..|.#...|#....|#####",
  ":": ".....|.##..|.##..|.....|.##..|.##..|.....",
  "-": ".....|.....|.....|#####|.....|.....|.....",
  ".": ".....|.....|.....|.....|.....|.##..|.##..",
  "/": "....#|...#.|...#.|..#..|.#...|.#...|#....",
  _: ".....|.....|.....|.....|.....|.....|#####",
  " ": ".....|.....|.....|.....|.....|.....|.....",
};

type Rgb = [number, number, number];

export interface ChamberPicture {
  /** The JPEG for this moment (made at most once per second). */
  frameAt(now?: number): Buffer;
  readonly width: number;
  readonly height: number;
}

export function createChamberPicture(options: { name: string; width?: number; height?: number; quality?: number }): ChamberPicture {
  const width = options.width ?? DEFAULT_PICTURE_WIDTH;
  const height = options.height ?? DEFAULT_PICTURE_HEIGHT;
  const quality = options.quality ?? DEFAULT_JPEG_QUALITY;
  const background = paintBackground(width, height);
  const canvas = Buffer.alloc(background.length);
  let cachedSecond = -1;
  let cached: Buffer = Buffer.alloc(0);

  const render = (second: number): Buffer => {
    background.copy(canvas);
    const scale = Math.max(1, Math.floor(height / FONT_SCALE_DIVISOR));
    // The toolhead sweeps the plate once a minute, so consecutive pictures differ visibly.
    const travel = width - 16 * scale;
    const phase = (second % 60) / 60;
    const x = Math.round(8 * scale + travel * (phase < 0.5 ? phase * 2 : 2 - phase * 2) * 0.9);
    fillRect(canvas, width, height, x, Math.round(height * 0.45), 12 * scale, 8 * scale, [230, 120, 30]);
    fillRect(canvas, width, height, 0, Math.round(height * 0.45) + 3 * scale, width, scale, [90, 90, 90]);
    drawText(canvas, width, height, options.name.toUpperCase(), 4 * scale, 4 * scale, scale * 2, [255, 255, 255]);
    const time = new Date(second * 1000).toISOString().slice(0, 19).replace("T", " ");
    drawText(canvas, width, height, time, 4 * scale, height - 12 * scale, scale, [120, 255, 120]);
    return jpeg.encode({ data: canvas, width, height }, quality).data;
  };

  return {
    width,
    height,
    frameAt(now = Date.now()) {
      const second = Math.floor(now / 1000);
      if (second !== cachedSecond) {
        cached = render(second);
        cachedSecond = second;
      }
      return cached;
    },
  };
}

/** A dark plate with a gradient and fixed grain (the grain is what makes the JPEG realistically large). */
function paintBackground(width: number, height: number): Buffer {
  const rgba = Buffer.alloc(width * height * 4);
  let seed = 0x2545f491;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      const grain = ((seed >>> 0) % GRAIN) - GRAIN / 2;
      const base = 40 + Math.round((y / height) * 60);
      const i = (y * width + x) * 4;
      rgba[i] = clamp(base + grain);
      rgba[i + 1] = clamp(base + grain + 5);
      rgba[i + 2] = clamp(base + grain + 15);
      rgba[i + 3] = 255;
    }
  }
  return rgba;
}

const clamp = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);

function fillRect(rgba: Buffer, width: number, height: number, x0: number, y0: number, w: number, h: number, color: Rgb): void {
  for (let y = Math.max(0, y0); y < Math.min(height, y0 + h); y++) {
    for (let x = Math.max(0, x0); x < Math.min(width, x0 + w); x++) {
      const i = (y * width + x) * 4;
      rgba[i] = color[0];
      rgba[i + 1] = color[1];
      rgba[i + 2] = color[2];
    }
  }
}

function drawText(rgba: Buffer, width: number, height: number, text: string, x0: number, y0: number, scale: number, color: Rgb): void {
  let x = x0;
  for (const ch of text) {
    const glyph = (GLYPHS[ch] ?? GLYPHS[" "]!).replaceAll("|", "");
    for (let row = 0; row < 7; row++) {
      for (let col = 0; col < 5; col++) {
        if (glyph[row * 5 + col] === "#") fillRect(rgba, width, height, x + col * scale, y0 + row * scale, scale, scale, color);
      }
    }
    x += 6 * scale;
  }
}

const COM_MARKER = 0xfe;
const APP0_MARKER = 0xe0;
const SOI_BYTES = 2;

/** Where the stamp goes: after the JFIF APP0 segment when there is one, since real chamber frames start
 * `FF D8 FF E0` and real clients (Home Assistant's integration) refuse a JPEG that does not. */
function stampOffset(jpegBytes: Buffer): number {
  if (jpegBytes.length < SOI_BYTES + 4 || jpegBytes[2] !== 0xff || jpegBytes[3] !== APP0_MARKER) return SOI_BYTES;
  return SOI_BYTES + 2 + jpegBytes.readUInt16BE(4);
}

/** The JPEG with a comment segment (FF FE) after SOI and APP0: lets a benchmark recognise each frame. */
export function stampJpeg(jpegBytes: Buffer, text: string): Buffer {
  const body = Buffer.from(text, "latin1");
  const segment = Buffer.alloc(4 + body.length);
  segment[0] = 0xff;
  segment[1] = COM_MARKER;
  segment.writeUInt16BE(body.length + 2, 2);
  body.copy(segment, 4);
  const at = stampOffset(jpegBytes);
  return Buffer.concat([jpegBytes.subarray(0, at), segment, jpegBytes.subarray(at)]);
}

/** The comment stampJpeg put in, when the JPEG (or its first bytes) carries one. */
export function readJpegStamp(jpegBytes: Buffer): string | undefined {
  const at = stampOffset(jpegBytes);
  if (jpegBytes.length < at + 4 || jpegBytes[at] !== 0xff || jpegBytes[at + 1] !== COM_MARKER) return undefined;
  const length = jpegBytes.readUInt16BE(at + 2);
  return jpegBytes.subarray(at + 4, at + 2 + length).toString("latin1");
}
