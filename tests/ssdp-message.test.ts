import { describe, expect, test } from "bun:test";
import {
  announcementOf, BAMBU_SEARCH_TARGET, encodeNotify, encodeSearch, encodeSearchResponse, isBambuSearch, parseSsdp,
  type BambuAnnouncement,
} from "../lib/bambu/ssdp-message.ts";

const proxy: BambuAnnouncement = {
  location: "192.168.1.201", serial: "00M09A350100123", modelCode: "BL-P001", name: "x1c", version: "01.08.02.00",
  signal: "-44", connect: "lan", bind: "free", seclink: "secure", inf: "", cap: "1",
};

/** An X1C's announcement as captured (../shared/PROTOCOLS.md), ~450 bytes with CRLF lines. */
const CAPTURED = [
  "NOTIFY * HTTP/1.1", "Host: 239.255.255.250:1990", "Server: UPnP/1.0", "Location: 192.168.1.100",
  "NT: urn:bambulab-com:device:3dprinter:1", "NTS: ssdp:alive", "USN: 00M09A350100123", "Cache-Control: max-age=1800",
  "DevModel.bambu.com: BL-P001", "DevName.bambu.com: Bob the Builder", "DevSignal.bambu.com: -58", "DevConnect.bambu.com: lan",
  "DevBind.bambu.com: free", "Devseclink.bambu.com: secure", "DevInf.bambu.com: wlan0", "DevVersion.bambu.com: 01.07.00.00",
  "DevCap.bambu.com: 1", "", "",
].join("\r\n");

describe("SSDP messages", () => {
  test("a NOTIFY has the printers' start line, headers and order, CRLF lines and an empty DevInf", () => {
    const text = encodeNotify(proxy).toString();
    expect(text).toBe(
      [
        "NOTIFY * HTTP/1.1", "Host: 239.255.255.250:1990", "Server: UPnP/1.0", "Location: 192.168.1.201",
        `NT: ${BAMBU_SEARCH_TARGET}`, "NTS: ssdp:alive", "USN: 00M09A350100123", "Cache-Control: max-age=1800",
        "DevModel.bambu.com: BL-P001", "DevName.bambu.com: x1c", "DevSignal.bambu.com: -44", "DevConnect.bambu.com: lan",
        "DevBind.bambu.com: free", "Devseclink.bambu.com: secure", "DevInf.bambu.com:", "DevVersion.bambu.com: 01.08.02.00",
        "DevCap.bambu.com: 1", "", "",
      ].join("\r\n"),
    );
  });

  test("a captured printer announcement parses into its facts", () => {
    const message = parseSsdp(Buffer.from(CAPTURED));
    expect(message?.kind).toBe("notify");
    expect(announcementOf(message!)).toEqual({
      location: "192.168.1.100", serial: "00M09A350100123", modelCode: "BL-P001", name: "Bob the Builder", version: "01.07.00.00",
      signal: "-58", connect: "lan", bind: "free", seclink: "secure", inf: "wlan0", cap: "1",
    });
  });

  test("what we encode parses back to the same announcement", () => {
    expect(announcementOf(parseSsdp(encodeNotify(proxy))!)).toEqual(proxy);
    const response = parseSsdp(encodeSearchResponse(proxy))!;
    expect(response.kind).toBe("response");
    expect(response.headers.st).toBe(BAMBU_SEARCH_TARGET);
    expect(response.headers.nt).toBeUndefined();
    expect(announcementOf(response)).toEqual(proxy);
  });

  test("M-SEARCH for the Bambu target or ssdp:all is ours to answer; other targets are not", () => {
    expect(isBambuSearch(parseSsdp(encodeSearch())!)).toBe(true);
    expect(isBambuSearch(parseSsdp(encodeSearch("ssdp:all"))!)).toBe(true);
    expect(isBambuSearch(parseSsdp(encodeSearch("upnp:rootdevice"))!)).toBe(false);
    expect(isBambuSearch(parseSsdp(Buffer.from(CAPTURED))!)).toBe(false);
  });

  test("other devices' SSDP, byebye and garbage are not printer announcements", () => {
    const router = "NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\nUSN: uuid:1234::upnp:rootdevice\r\n\r\n";
    expect(announcementOf(parseSsdp(Buffer.from(router))!)).toBeUndefined();
    expect(announcementOf(parseSsdp(Buffer.from(CAPTURED.replace("ssdp:alive", "ssdp:byebye")))!)).toBeUndefined();
    expect(parseSsdp(Buffer.from([0xa5, 0xa5, 0, 0]))).toBeUndefined();
    expect(parseSsdp(Buffer.alloc(10_000, 65))).toBeUndefined();
  });
});
