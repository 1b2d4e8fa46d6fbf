/**
 * A real browser for tests: headless Chromium from Debian's `chromium`
 * package, driven by `playwright-core` (no browser download: the machine's
 * network is closed, and the flags below keep Chromium from reaching out).
 * `.ci/run` installs the package when it is missing; a developer's run
 * installs it the same way when it can (as root, with apt-get), and the
 * browser tests are skipped, saying why, only when it cannot.
 *
 * @module
 */

import { type BrowserContext, chromium, type Page } from "playwright-core";

/** Where Debian's package puts Chromium. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/** Chromium's flags: headless, no sandbox (root in a container), and no network of its own. */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Where a failed browser test leaves its screenshot: under the project's gitignored `data/`. */
export const SCREENSHOT_DIR = new URL("../../data/test-artifacts/ui/", import.meta.url).pathname;

function executable(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

async function run(command: string, args: string[]): Promise<boolean> {
  try {
    const output = await new Deno.Command(command, {
      args,
      env: { DEBIAN_FRONTEND: "noninteractive" },
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!output.success) console.error(new TextDecoder().decode(output.stderr).slice(-2000));
    return output.success;
  } catch {
    return false;
  }
}

/**
 * Chromium's path, installing Debian's package first if it is missing and
 * this process may (root, apt-get present), as `.ci/run` does; or the reason
 * it cannot be had. Under CI (`CI` set) a missing browser is an error, not a
 * skip: CI must run the browser tests.
 */
export async function findChromium(): Promise<{ path: string } | { missing: string }> {
  if (executable(CHROMIUM_PATH)) return { path: CHROMIUM_PATH };
  let reason = `${CHROMIUM_PATH} is absent`;
  if (Deno.uid() === 0 && executable("/usr/bin/apt-get")) {
    console.error(`${CHROMIUM_PATH} is absent: installing Debian's chromium package`);
    if (
      await run("apt-get", ["update", "-qq"]) &&
      await run("apt-get", ["install", "-y", "-qq", "chromium"]) &&
      executable(CHROMIUM_PATH)
    ) {
      return { path: CHROMIUM_PATH };
    }
    reason += " and apt-get install -y chromium failed";
  } else {
    reason += " and this user cannot install it (apt-get install -y chromium, as root)";
  }
  if (Deno.env.get("CI") !== undefined) {
    throw new Error(`${reason}: CI must run the browser tests (.ci/run installs it)`);
  }
  return { missing: reason };
}

/** A running headless Chromium with a fresh profile, and how to stop it. */
export interface TestBrowser {
  /** Its browser context (one profile). */
  readonly context: BrowserContext;
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/** Starts headless Chromium at `path` with {@linkcode CHROMIUM_ARGS} and a fresh `--user-data-dir`. */
export async function launchBrowser(path: string): Promise<TestBrowser> {
  const profile = await Deno.makeTempDir({ prefix: "epaxos-chromium-" });
  // playwright passes the profile as --user-data-dir itself.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: path,
    headless: true,
    args: [...CHROMIUM_ARGS],
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** Saves a full-page screenshot of `page` as `<name>.png` under {@linkcode SCREENSHOT_DIR}; returns its path. */
export async function saveScreenshot(page: Page, name: string): Promise<string> {
  await Deno.mkdir(SCREENSHOT_DIR, { recursive: true });
  const path = `${SCREENSHOT_DIR}${name.replace(/[^A-Za-z0-9_-]+/g, "-")}.png`;
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Runs `body`; if it throws, saves a screenshot of `page` named after `name`
 * and the time, prints its path, and throws on.
 */
export async function screenshotOnFailure(
  page: Page,
  name: string,
  body: () => Promise<void>,
): Promise<void> {
  try {
    await body();
  } catch (error) {
    try {
      const path = await saveScreenshot(page, `failed-${name}-${Date.now()}`);
      console.error(`browser test "${name}" failed; screenshot: ${path}`);
    } catch (screenshotError) {
      console.error(`browser test "${name}" failed; no screenshot: ${screenshotError}`);
    }
    throw error;
  }
}
