// The browser test of the facteur admin UI (issue 7, "Done when"), run by
// browser_test.go: node run.mjs <base-url>.
//
// Headless Debian chromium driven by playwright-core, a fresh profile per
// run. The scenario: the superadmin logs in, creates a domain and a domain
// admin; the domain admin logs in, creates a mailbox (after the form shows
// its errors next to the fields) and an alias, sets a vacation reply, sees
// the audit entries, the queue and the delivery log of its domain only,
// and fails to reach another domain; the mailbox user logs in to
// self-service and sets up forwarding. Any console error or uncaught page
// error (a Content-Security-Policy violation is one) fails the run.
// Screenshots of the main pages go to $FACTEUR_ARTIFACTS.

import { chromium } from "playwright-core";
import { mkdtemp, rm, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.argv[2];
if (!base) {
  console.error("usage: node run.mjs <base-url>");
  process.exit(2);
}
const artifacts = process.env.FACTEUR_ARTIFACTS || "artifacts";
const executablePath = process.env.FACTEUR_CHROMIUM || "/usr/bin/chromium";
const rootUser = process.env.FACTEUR_ROOT_USER || "root";
const rootPassword = process.env.FACTEUR_ROOT_PASSWORD || "root-password-1";

const doraPassword = "Dora-password-42";
const janePassword = "Jane-password-42";

const problems = [];
let shot = 0;

function check(cond, what) {
  if (!cond) {
    throw new Error("check failed: " + what);
  }
  console.log("ok  " + what);
}

async function screenshot(page, name) {
  shot++;
  const file = join(artifacts, String(shot).padStart(2, "0") + "-" + name + ".png");
  await page.screenshot({ path: file, fullPage: true });
  console.log("    screenshot " + file);
}

// goto loads a page and returns its HTTP status.
async function goto(page, path) {
  const res = await page.goto(base + path);
  return res ? res.status() : 0;
}

// submit clicks a submit button and waits for the page it leads to.
async function submit(page, locator) {
  await Promise.all([page.waitForLoadState("load"), page.waitForNavigation(), locator.click()]);
}

async function login(page, user, password) {
  await goto(page, "/login");
  await page.fill("#f-username", user);
  await page.fill("#f-password", password);
  await submit(page, page.getByRole("button", { name: "Log in" }));
}

async function logout(page) {
  await submit(page, page.getByRole("button", { name: "Log out" }));
  check(page.url().startsWith(base + "/login") || page.url().startsWith(base + "/user/login"), "logged out");
}

const userDataDir = await mkdtemp(join(tmpdir(), "facteur-chromium-"));
await mkdir(artifacts, { recursive: true });
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 860 },
});
const page = context.pages()[0] || (await context.newPage());
page.setDefaultTimeout(15000);
page.on("console", (msg) => {
  if (msg.type() === "error") {
    // A 404 or 403 page we asked for is logged by Chromium as a failed
    // resource load; anything else is a problem (CSP violations included).
    const text = msg.text();
    if (!/Failed to load resource: the server responded with a status of 4[0-9][0-9]/.test(text)) {
      problems.push("console error on " + page.url() + ": " + text);
    }
  }
});
page.on("pageerror", (err) => problems.push("page error on " + page.url() + ": " + err.message));
page.on("dialog", (d) => d.accept()); // the confirmations of app.js

let failed = false;
try {
  // 1. The superadmin logs in.
  await goto(page, "/");
  check(page.url().startsWith(base + "/login"), "an anonymous visitor is sent to the login page");
  await screenshot(page, "login");
  await page.fill("#f-username", rootUser);
  await page.fill("#f-password", "wrong password");
  await submit(page, page.getByRole("button", { name: "Log in" }));
  check(await page.locator(".alert").isVisible(), "a wrong password is refused with a message");
  await page.fill("#f-username", rootUser);
  await page.fill("#f-password", rootPassword);
  await submit(page, page.getByRole("button", { name: "Log in" }));
  check(page.url() === base + "/domains", "the superadmin lands on the domain list");

  // 2. It creates a domain with limits.
  await page.getByRole("link", { name: "New domain" }).click();
  await page.waitForURL(base + "/domains/new");
  await page.fill("#f-name", "shop.test");
  await page.fill("#f-description", "The shop");
  await page.fill("#f-max_mailboxes", "50");
  await page.fill("#f-max_aliases", "200");
  await page.fill("#f-max_quota_mb", "2048");
  await page.fill("#f-total_quota_mb", "10240");
  await page.fill("#f-default_quota_mb", "1024");
  await screenshot(page, "domain-new");
  await submit(page, page.getByRole("button", { name: "Create domain" }));
  check(page.url() === base + "/domains/shop.test?done=created", "the domain is created");
  check((await page.locator(".notice").textContent()).includes("Created"), "a confirmation is shown");
  await screenshot(page, "domain");

  // 3. It creates a domain admin for it.
  await goto(page, "/admins/new");
  await page.fill("#f-username", "dora");
  await page.fill("#f-password", doraPassword);
  await page.fill("#f-password2", doraPassword);
  await page.getByLabel("shop.test").check();
  await submit(page, page.getByRole("button", { name: "Create admin" }));
  check(page.url() === base + "/admins/dora?done=created", "the domain admin is created");
  await goto(page, "/admins");
  await screenshot(page, "admins");
  await goto(page, "/domains");
  await screenshot(page, "domains-superadmin");
  await logout(page);

  // 4. The domain admin logs in and sees its domain only.
  await login(page, "dora", doraPassword);
  check(page.url() === base + "/domains", "the domain admin lands on the domain list");
  const domains = await page.locator("main").textContent();
  check(domains.includes("shop.test") && !domains.includes("other.test"), "it sees its domain and no other");
  await screenshot(page, "domains-domain-admin");

  // 5. It creates a mailbox: first with mistakes, shown next to the fields.
  await goto(page, "/mailboxes/new");
  await page.fill("#f-local_part", "jane");
  await page.fill("#f-name", "Jane Doe");
  await page.fill("#f-password", "short");
  await page.fill("#f-password2", "shrot");
  await submit(page, page.getByRole("button", { name: "Create mailbox" }));
  check(await page.locator("#f-password2-err").isVisible(), "mismatched passwords: the error is next to the second field");
  await page.fill("#f-password", "short");
  await page.fill("#f-password2", "short");
  await submit(page, page.getByRole("button", { name: "Create mailbox" }));
  const pwErr = await page.locator("#f-password-err").textContent();
  check(/at least 10 characters/.test(pwErr), "a weak password: the policy's message is next to the password field");
  check((await page.locator("#f-local_part").inputValue()) === "jane", "the form keeps what was typed");
  await screenshot(page, "mailbox-form-errors");
  await page.fill("#f-password", janePassword);
  await page.fill("#f-password2", janePassword);
  await submit(page, page.getByRole("button", { name: "Create mailbox" }));
  check(page.url() === base + "/mailboxes/jane@shop.test?done=created", "the mailbox is created");

  // 6. It sets a vacation reply.
  await page.getByRole("link", { name: "Set up" }).click();
  await page.waitForURL(base + "/mailboxes/jane@shop.test/vacation");
  await page.fill("#f-subject", "On holiday");
  await page.fill("#f-body", "I am away until Monday. Mail is read when I am back.");
  await page.fill("#f-active_until", "2030-01-06T09:00");
  await screenshot(page, "vacation");
  await submit(page, page.getByRole("button", { name: "Save vacation reply" }));
  check(page.url() === base + "/mailboxes/jane@shop.test?done=vacation", "the vacation reply is saved");
  await screenshot(page, "mailbox");

  // 7. It creates an alias with two destinations.
  await goto(page, "/aliases/new");
  await page.fill("#f-local_part", "sales");
  await page.fill("#f-destinations", "jane@shop.test\nboss@example.org");
  await page.fill("#f-description", "Sales enquiries");
  await submit(page, page.getByRole("button", { name: "Create alias" }));
  check(page.url() === base + "/aliases/sales@shop.test?done=created", "the alias is created");
  await goto(page, "/aliases");
  await screenshot(page, "aliases");

  // 8. The list filters as one types (htmx under the CSP), and without
  // script through the form.
  await goto(page, "/mailboxes");
  await page.fill("#q", "zzz-nothing");
  await page.waitForFunction(() => document.querySelector("#results").textContent.includes("No mailboxes"));
  check(page.url().includes("search=zzz-nothing"), "live search updates the address");
  await page.fill("#q", "jan");
  await page.waitForFunction(() => document.querySelector("#results").textContent.includes("jane@shop.test"));
  check(true, "live search finds the mailbox");
  await screenshot(page, "mailboxes");

  // 9. The audit log has the domain admin's changes, and nothing of
  // another domain.
  await goto(page, "/audit");
  const audit = await page.locator("#results").textContent();
  check(audit.includes("admin:dora") && audit.includes("jane@shop.test") && audit.includes("sales@shop.test"),
    "the audit log shows the domain admin's mailbox and alias");
  check(audit.includes("vacation"), "the audit log shows the vacation reply");
  check(!audit.includes("other.test"), "the audit log shows nothing of another domain");
  await page.selectOption("#f-table", "alias");
  await submit(page, page.getByRole("button", { name: "Filter" }));
  const aliasAudit = await page.locator("#results tbody").textContent();
  check(aliasAudit.includes("alias sales@shop.test") && !aliasAudit.includes("mailbox jane@shop.test"), "the audit log filters by kind");
  await goto(page, "/audit");
  await screenshot(page, "audit");

  // 10. Its queue and delivery log: its recipients only.
  await goto(page, "/queue");
  const queue = await page.locator("#results").textContent();
  check(queue.includes("Q1shopAndOther") && queue.includes("jane@shop.test"), "the queue shows its message");
  check(!queue.includes("other.test") && !queue.includes("Q2otherOnly"), "and no other domain's recipient or message");
  await screenshot(page, "queue");
  await page.locator('input[name="id"][value="Q1shopAndOther"]').check();
  await submit(page, page.getByRole("button", { name: "Retry now" }));
  check((await page.locator(".notice").textContent()).includes("flush: 1 message"), "it retries its recipient now");
  await page.locator('input[name="id"][value="Q1shopAndOther"]').check();
  const holdRes = page.waitForResponse((r) => r.url() === base + "/queue" && r.request().method() === "POST");
  await page.getByRole("button", { name: "Hold" }).click();
  check((await holdRes).status() === 403, "it may not hold a message that another domain's recipient shares");
  await page.waitForLoadState("load");
  await goto(page, "/log");
  const log = await page.locator("#results").textContent();
  check(log.includes("jane@shop.test") && !log.includes("other.test"), "the delivery log shows its domain only");
  await screenshot(page, "delivery-log");

  // 11. Another domain is out of reach, in every spelling.
  for (const path of ["/domains/other.test", "/domains/OTHER.TEST.", "/mailboxes/u@other.test", "/mailboxes/U@Other.Test.",
    "/aliases/postmaster@other.test", "/mailboxes/u@other.test/vacation", "/queue/Q2otherOnly", "/admins"]) {
    const status = await goto(page, path);
    check(status === 404 || status === 403, "GET " + path + " is refused (" + status + ")");
    check(!(await page.locator("main").textContent()).includes("other.test"), "and the page does not name it");
  }
  await goto(page, "/mailboxes/u@other.test");
  await screenshot(page, "another-domain-not-found");
  const del = await page.request.post(base + "/mailboxes/u@other.test/delete", { maxRedirects: 0 });
  check(del.status() === 404, "POST delete of another domain's mailbox is not found (" + del.status() + ")");
  const cross = await page.request.post(base + "/mailboxes/jane@shop.test/delete",
    { headers: { "Sec-Fetch-Site": "cross-site", Origin: "https://evil.example" }, maxRedirects: 0 });
  check(cross.status() === 403, "a cross-site form post is refused (" + cross.status() + ")");
  await logout(page);

  // 12. The mailbox user logs in with the password the admin set, and
  // sets up forwarding with a copy kept.
  await goto(page, "/user/login");
  await page.fill("#f-address", "Jane@Shop.Test");
  await page.fill("#f-password", janePassword);
  await submit(page, page.getByRole("button", { name: "Log in" }));
  check(page.url() === base + "/user", "the mailbox user lands on its page");
  await screenshot(page, "self-service");
  await page.getByRole("link", { name: "Forwarding" }).first().click();
  await page.waitForURL(base + "/user/forwarding");
  await page.fill("#f-destinations", "jane.doe@example.org");
  await submit(page, page.getByRole("button", { name: "Save forwarding" }));
  check(page.url() === base + "/user/forwarding?done=forwarding", "forwarding is saved");
  await page.fill("#f-destinations", "|/bin/sh -c id");
  await submit(page, page.getByRole("button", { name: "Save forwarding" }));
  check((await page.locator("#f-destinations-err").textContent()).includes("CLI only"), "a command destination is refused next to the field");
  const status = await goto(page, "/domains");
  check(status === 403, "a mailbox user cannot reach the admin pages (" + status + ")");
  await goto(page, "/user/app-passwords");
  await page.fill("#f-ap_name", "phone");
  await submit(page, page.getByRole("button", { name: "Create app password" }));
  check(/^[a-z2-9]{5}(-[a-z2-9]{5}){3}$/.test((await page.locator("#secret-value").textContent()).trim()), "an app password is shown once");
  await screenshot(page, "self-app-passwords");

  // 13. A narrow screen: the navigation wraps above the content.
  await logout(page);
  await login(page, "dora", doraPassword);
  await page.setViewportSize({ width: 390, height: 844 });
  await goto(page, "/mailboxes");
  await screenshot(page, "mailboxes-narrow");
} catch (err) {
  failed = true;
  console.error("FAIL " + (err && err.stack ? err.stack : err));
  try {
    await screenshot(page, "failure");
    console.error("    at " + page.url());
  } catch {
    // the browser is gone
  }
} finally {
  await context.close();
  await rm(userDataDir, { recursive: true, force: true });
}
for (const p of problems) {
  console.error("FAIL " + p);
}
if (failed || problems.length > 0) {
  process.exit(1);
}
console.log("all browser checks passed");
