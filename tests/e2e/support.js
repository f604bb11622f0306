// Shared helpers for the browser tests: start the real switchboard binary on free ports and
// launch Debian's Chromium through playwright-core.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SHOTS = path.join(ROOT, "target", "e2e");
mkdirSync(SHOTS, { recursive: true });

const BIN = process.env.SWITCHBOARD_BIN || path.join(ROOT, "target", "debug", "switchboard");

/** Starts `switchboard serve` on port 0 and resolves with its addresses once it listens. */
export function startServer(extraArgs = []) {
  const store = extraArgs.includes("--data-dir") ? [] : ["--store", "memory"];
  const args = ["serve", "--tcp", "127.0.0.1:0", "--udp", "off", "--http", "127.0.0.1:0",
    "--log-format", "json", ...store, ...extraArgs];
  const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
  const addrs = {};
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 10 s")), 10_000);
    child.on("exit", (code) => reject(new Error(`server exited early (${code})`)));
    createInterface({ input: child.stderr }).on("line", (line) => {
      let v;
      try { v = JSON.parse(line); } catch { return; }
      const { message, addr } = v.fields || {};
      if (addr && /listening$/.test(message || "")) {
        addrs[message.split(" ")[0]] = addr;
        if (addrs.tcp && addrs.http) {
          clearTimeout(timer);
          resolve({ child, tcp: addrs.tcp, http: addrs.http, stop: () => stop(child) });
        }
      }
    });
  });
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 8_000).unref();
  });
}

/** Launches headless Chromium with the flags this machine needs. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
