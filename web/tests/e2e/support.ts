/** Helpers of the browser tests: mail codes, photos, screenshots, students. */

import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { deflateSync } from "node:zlib";

import { expect, type Browser, type BrowserContext, type Page } from "@playwright/test";

export const OUTBOX = process.env.UNIMATCH_OUTBOX ?? "";
export const SCREENS = path.join(__dirname, "..", "..", "test-results", "screens");

/** The `count`-th verification code mailed to `address` (newest first wins). */
export async function mailedCode(address: string, count = 1, within = 60_000): Promise<string> {
  if (!OUTBOX) throw new Error("UNIMATCH_OUTBOX is not set");
  const deadline = Date.now() + within;
  for (;;) {
    const codes: Array<{ name: string; code: string }> = [];
    const names = await readdir(OUTBOX).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith(".eml")).sort()) {
      const raw = await readFile(path.join(OUTBOX, name), "utf8");
      const [head, ...rest] = raw.split(/\r?\n\r?\n/);
      const to = /^To:\s*(.+)$/im.exec(head ?? "")?.[1]?.trim();
      const code = /\b(\d{6})\b/.exec(rest.join("\n"))?.[1];
      if (to === address && code) codes.push({ name, code });
    }
    if (codes.length >= count) return codes[count - 1]!.code;
    if (Date.now() > deadline) throw new Error(`no code for ${address} within ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A real PNG photo: a vertical gradient of `rgb`, `width`×`height`. */
export function pngPhoto(rgb: [number, number, number], width = 320, height = 400): Buffer {
  const rows: Buffer[] = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    const shade = 0.6 + (0.4 * y) / height;
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round(rgb[0] * shade);
      row[2 + x * 3] = Math.round(rgb[1] * shade);
      row[3 + x * 3] = Math.round(rgb[2] * shade);
    }
    rows.push(row);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SCREENS, `${name}.png`), fullPage: false });
}

/** Fails the test on any Content-Security-Policy violation or page error. */
export function watchForProblems(page: Page, problems: string[]): void {
  page.on("console", (message) => {
    const text = message.text();
    if (message.type() === "error" && /Content Security Policy|Refused to/i.test(text)) problems.push(text);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
}

export interface Student {
  name: string;
  email: string;
  password: string;
  gender: "Woman" | "Man" | "Non-binary";
  seeking: "Woman" | "Man" | "Non-binary";
  color: [number, number, number];
}

export function newStudent(name: string, gender: Student["gender"], seeking: Student["seeking"], color: Student["color"]): Student {
  const tag = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
  return {
    name,
    email: `${name.toLowerCase()}.${tag}@students.uonbi.ac.ke`,
    password: `correct horse ${tag}`,
    gender,
    seeking,
    color,
  };
}

export async function openStudent(browser: Browser): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  return { context, page };
}

export async function signUp(page: Page, student: Student, shots?: string): Promise<void> {
  await page.goto("/signup");
  await page.getByLabel("Your first name").fill(student.name);
  await page.getByLabel("University email").fill(student.email);
  await page.getByLabel("Password").fill(student.password);
  if (shots) await screenshot(page, shots);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page).toHaveURL(/\/verify\?email=/);
}

export async function verify(page: Page, student: Student, shots?: string): Promise<void> {
  const code = await mailedCode(student.email);
  await page.getByLabel("Verification code").fill(code);
  if (shots) await screenshot(page, shots);
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(/\/onboarding/);
}

/** Fills every profile field the same way for both students, and a photo. */
export async function onboard(page: Page, student: Student, campus: string, shots?: string): Promise<void> {
  await page.getByLabel("Campus").selectOption({ label: campus });
  await page.getByLabel("Year of study").selectOption({ label: "Year 2" });
  await page.getByLabel("Birthdate").fill("2002-05-14");
  await page.getByLabel("Gender").selectOption({ label: student.gender });
  await page.getByRole("group", { name: "Interested in" }).getByLabel(student.seeking, { exact: true }).check();
  const interests = page.getByRole("group", { name: "Interests" }).getByRole("checkbox");
  for (let i = 0; i < 3; i++) await interests.nth(i).check();
  await page.getByLabel("About you").fill(`Hi, I am ${student.name}.`);
  await page.getByRole("button", { name: "Save profile" }).click();
  await expect(page.getByText("Profile saved.")).toBeVisible();
  await page.getByLabel("Add a photo").setInputFiles({
    name: `${student.name}.png`,
    mimeType: "image/png",
    buffer: pngPhoto(student.color),
  });
  await expect(page.getByAltText("Your photo 1")).toBeVisible();
  await expect(page.getByRole("button", { name: "Start discovering" })).toBeEnabled();
  if (shots) await screenshot(page, shots);
}

/** Passes on everyone else until `target` is on top, then likes them. */
export async function findAndLike(page: Page, targetId: string, shots?: string): Promise<void> {
  const card = page.getByTestId("discover-card");
  for (let seen = 0; seen < 200; seen++) {
    await expect(card).toBeVisible();
    const id = await card.getAttribute("data-user-id");
    if (id === targetId) {
      if (shots) await screenshot(page, shots);
      await page.getByTestId("like-button").click();
      return;
    }
    await Promise.all([
      page.waitForResponse((r) => r.url().endsWith("/api/v1/swipes") && r.request().method() === "POST"),
      page.getByTestId("pass-button").click(),
    ]);
  }
  throw new Error(`${targetId} never appeared in discover`);
}

export async function userIdOf(page: Page): Promise<string> {
  return page.evaluate(async () => {
    const raw = localStorage.getItem("unimatch.session");
    const access = raw ? (JSON.parse(raw) as { access: string }).access : "";
    const response = await fetch("/api/v1/me", { headers: { Authorization: `Bearer ${access}` } });
    const me = (await response.json()) as { user: { user_id: string } };
    return me.user.user_id;
  });
}
