// The version: package.json's, plus the git commit when build.sh baked one in (PANDAPROXY_BUILD at compile time).
import pkg from "../package.json" with { type: "json" };

declare const PANDAPROXY_BUILD: string | undefined;

export function versionString(): string {
  const build = typeof PANDAPROXY_BUILD === "string" && PANDAPROXY_BUILD ? ` (commit ${PANDAPROXY_BUILD})` : "";
  return `pandaproxy ${pkg.version}${build}`;
}
