// The dashboard in a real browser: Debian's Chromium driven by playwright-core (never a
// downloaded browser). Run by tests/api/dashboard.rs, which starts orderly, places an order and
// dead-letters a poisoned message first, and passes:
//   ORDERLY_URL, ORDERLY_ADMIN_TOKEN, ORDER_ID, POISON_ID, SCREENSHOTS (a directory)
// Exits non-zero, saying which step failed, when the page does not do what an operator needs.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const { ORDERLY_URL, ORDERLY_ADMIN_TOKEN, ORDER_ID, POISON_ID, SCREENSHOTS } = process.env;
for (const [name, value] of Object.entries({ ORDERLY_URL, ORDERLY_ADMIN_TOKEN, ORDER_ID, POISON_ID, SCREENSHOTS })) {
  if (!value) throw new Error(`${name} is not set`);
}
mkdirSync(SCREENSHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let step = "start";
const expectTrue = (ok, what) => { if (!ok) throw new Error(what); };

async function signIn(page) {
  step = "sign in";
  await page.goto(`${ORDERLY_URL}/dashboard`);
  await page.getByTestId("token").fill("not-the-token");
  await page.getByTestId("signin-button").click();
  await page.getByText("That token is not the admin's.").waitFor();
  await page.getByTestId("token").fill(ORDERLY_ADMIN_TOKEN);
  await page.getByTestId("signin-button").click();
  await page.getByTestId("live").filter({ hasText: "live ·" }).waitFor();
  // The token is kept for the tab: a reload stays signed in.
  await page.reload();
  await page.getByTestId("live").filter({ hasText: "live ·" }).waitFor();
}

try {
  // --- a desktop -------------------------------------------------------------------------
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await signIn(page);

  step = "live numbers";
  // Two reads a second apart give a rate; the dead letter shows in the per-queue table.
  await page.waitForFunction(() => document.getElementById("m-rate").textContent !== "–");
  await page.getByTestId("dead-letters-by-queue").locator("tr", { hasText: "payments" }).waitFor();
  await page.screenshot({ path: `${SCREENSHOTS}/1-dashboard-1280.png`, fullPage: true });

  step = "find the order's saga";
  await page.getByTestId("filter-order").fill(ORDER_ID);
  await page.getByTestId("search-button").click();
  const row = page.getByTestId("saga-row");
  await row.first().waitFor();
  expectTrue(await row.count() === 1, `one saga for the order, found ${await row.count()}`);
  expectTrue((await row.first().textContent()).includes(ORDER_ID), "the row names the order");

  step = "open its timeline";
  await row.first().click();
  await page.getByTestId("timeline").waitFor();
  await page.getByTestId("saga-state").filter({ hasText: "completed" }).waitFor();
  for (const event of ["order_placed", "stock_reserved", "payment_charged", "order_confirmed"]) {
    await page.getByTestId("history").locator("tr", { hasText: event }).waitFor();
  }
  await page.screenshot({ path: `${SCREENSHOTS}/2-timeline-1280.png`, fullPage: true });

  step = "replay the poisoned message";
  const letter = page.locator(`tr[data-testid="dead-letter"][data-id="${POISON_ID}"]`);
  await letter.waitFor();
  expectTrue((await letter.textContent()).includes("malformed message"), "the dead letter shows its reason");
  await letter.getByTestId("replay").click();
  await page.getByTestId("dead-letters-status").filter({ hasText: `Replayed ${POISON_ID}` }).waitFor();
  // It cannot be processed, so it comes back to the dead letters, with its reason again.
  await page.locator(`tr[data-testid="dead-letter"][data-id="${POISON_ID}"]`).waitFor({ timeout: 15000 });
  await page.screenshot({ path: `${SCREENSHOTS}/3-dead-letters-1280.png`, fullPage: true });
  expectTrue(errors.length === 0, `no script errors: ${errors.join("; ")}`);

  // --- a phone ---------------------------------------------------------------------------
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  await signIn(small);
  step = "the phone layout";
  await small.getByTestId("results").locator("tr").first().waitFor();
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expectTrue(overflow <= 1, `the page fits a phone's width (${overflow}px too wide)`);
  await small.screenshot({ path: `${SCREENSHOTS}/4-dashboard-390.png`, fullPage: true });

  console.log(`dashboard: ok; screenshots in ${SCREENSHOTS}`);
} catch (e) {
  console.error(`dashboard: failed at "${step}": ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
