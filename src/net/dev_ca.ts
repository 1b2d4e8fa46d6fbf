/**
 * A development certificate authority: a CA certificate and one certificate
 * per replica it signs, all ECDSA P-256 with SHA-256, made with WebCrypto and
 * written in PEM. `deno task certs` and `deno task start --tls` use it; a
 * production cluster brings certificates from its own CA instead.
 *
 * X.509 is encoded by `@peculiar/x509` (PeculiarVentures, the authors of
 * `pkijs` and `webcrypto`; built on WebCrypto, so no OpenSSL is needed). It
 * resolves its services through `tsyringe`, which wants the Reflect metadata
 * API: `reflect-metadata` is imported first for that alone.
 *
 * Replica certificates carry both `serverAuth` and `clientAuth` usages: the
 * same certificate serves a replica's listener and is presented when it calls
 * its peers (mutual TLS, where the peer can ask for it; see `tls.ts`).
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;
/** How long a development CA is valid. */
export const CA_VALIDITY_DAYS = 3650;
/** How long a replica certificate is valid (browsers' limit is 398 days). */
export const CERTIFICATE_VALIDITY_DAYS = 397;

/** A certificate and its private key, both PEM. */
export interface PemPair {
  /** The certificate, PEM (`-----BEGIN CERTIFICATE-----`). */
  readonly cert: string;
  /** The private key, PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`). */
  readonly key: string;
}

/** A subject alternative name: an IP address or a DNS name. */
export interface AltName {
  /** `ip` for an address literal, `dns` for a host name. */
  readonly type: "ip" | "dns";
  /** The address or name. */
  readonly value: string;
}

/**
 * The names a certificate for a replica reached at `urls` must carry: each
 * URL's host (an IP address or a DNS name; brackets of IPv6 dropped), and for
 * a loopback host the other loopback names too (`127.0.0.1`, `::1`,
 * `localhost`), so that a local cluster answers however it is called.
 */
export function altNamesFor(urls: readonly string[]): AltName[] {
  const names = new Map<string, AltName>();
  const add = (name: AltName) => names.set(`${name.type}:${name.value}`, name);
  for (const url of urls) {
    const host = new URL(url).hostname.replace(/^\[(.*)\]$/, "$1");
    const ip = /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(":");
    add({ type: ip ? "ip" : "dns", value: host });
    if (host === "localhost" || host === "::1" || /^127\./.test(host)) {
      add({ type: "ip", value: "127.0.0.1" });
      add({ type: "ip", value: "::1" });
      add({ type: "dns", value: "localhost" });
    }
  }
  return [...names.values()];
}

function serialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // positive, as RFC 5280 §4.1.2.2 requires
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY") +
    "\n";
}

/**
 * Makes a CA: a self-signed certificate that may sign end-entity
 * certificates only (path length 0), named `CN=<name>` with a random suffix,
 * so that two development CAs never share a name (a verifier would otherwise
 * try the wrong one's key).
 */
export async function makeCertificateAuthority(
  name = "epaxos-kv development CA",
  now = new Date(),
): Promise<PemPair> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const suffix = serialNumber().slice(0, 8);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${name} ${suffix}`,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString("pem") + "\n", key: await keyPem(keys.privateKey) };
}

/**
 * Makes a certificate for `commonName` with the subject alternative names
 * `altNames`, signed by the CA `authority`, valid for server and client
 * authentication for {@linkcode CERTIFICATE_VALIDITY_DAYS} days.
 *
 * @throws {TypeError} if there is no name or the CA's key does not fit its certificate.
 */
export async function issueCertificate(
  authority: PemPair,
  commonName: string,
  options: { readonly altNames: readonly AltName[]; readonly now?: Date },
): Promise<PemPair> {
  if (options.altNames.length === 0) throw new TypeError("A certificate needs at least one name");
  const now = options.now ?? new Date();
  const caCert = new x509.X509Certificate(authority.cert);
  const caKey = await crypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(authority.key),
    ALGORITHM,
    false,
    ["sign"],
  );
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${commonName.replace(/[,+="\\<>;#]/g, "_")}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + CERTIFICATE_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(
        options.altNames.map((name) => ({ type: name.type, value: name.value })),
      ),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  if (!(await cert.verify({ publicKey: caCert }))) {
    throw new TypeError("The CA's key does not match its certificate");
  }
  return { cert: cert.toString("pem") + "\n", key: await keyPem(keys.privateKey) };
}

/** What a certificate says of itself, for the certs tool's report. */
export interface CertificateSummary {
  /** The subject, as `CN=...`. */
  readonly subject: string;
  /** The issuer, as `CN=...`. */
  readonly issuer: string;
  /** The end of its validity. */
  readonly notAfter: Date;
  /** Its subject alternative names. */
  readonly altNames: readonly string[];
}

/**
 * Reads a PEM certificate's subject, issuer, expiry and names.
 *
 * @throws {TypeError} if it is not a PEM certificate.
 */
export function describeCertificate(pem: string): CertificateSummary {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(pem);
  } catch (error) {
    throw new TypeError(`Not a PEM certificate: ${(error as Error).message}`);
  }
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    notAfter: cert.notAfter,
    altNames: san === null ? [] : san.names.items.map((name) => `${name.type}:${name.value}`),
  };
}
