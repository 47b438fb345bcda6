// Receipt verification in the browser: the same algorithms as domain/entry.py, domain/merkle.py
// (RFC 6962 / RFC 9162 inclusion proofs) and domain/checkpoint.py (Ed25519 over RFC 8785 JSON).
import { blake3 } from "@noble/hashes/blake3.js";
import { ed25519 } from "@noble/curves/ed25519.js";

export type Receipt = {
  ledger: { ledger_id: string; hash_alg: string };
  entry: {
    position: number; event_id: string; tenant_id: string; stream_id: string; stream_version: number;
    type: string; schema_version: number; payload: unknown; metadata: unknown; recorded_at: string;
  };
  entry_hash: string;
  inclusion_proof: { leaf_index: number; tree_size: number; hashes: string[] };
  checkpoint: {
    ledger_id: string; hash_alg: string; tree_size: number; root: string; chain_head: string;
    signed_at: string; key_id: string; signature: string;
  };
  public_key: { key_id: string; algorithm: string; public_key: string };
};

export type Check = { name: string; ok: boolean; detail: string };

const enc = new TextEncoder();
export const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
export function unhex(s: string): Uint8Array {
  if (s.length % 2 || /[^0-9a-f]/i.test(s)) throw new Error(`not hex: ${s.slice(0, 16)}...`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), (o += p.length));
  return out;
};

/** RFC 8785 (JCS): keys sorted by UTF-16 code units, ECMAScript number and string serialisation. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error("no RFC 8785 encoding for NaN/Infinity");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(",")}}`;
  }
  throw new Error(`cannot canonicalise ${typeof value}`);
}

type Digest = (data: Uint8Array) => Promise<Uint8Array>;
const sha256: Digest = async (d) => new Uint8Array(await crypto.subtle.digest("SHA-256", d as BufferSource));
const DIGESTS: Record<string, Digest> = { sha256, blake3: async (d) => blake3(d) };

export function hasher(name: string) {
  const digest = DIGESTS[name];
  if (!digest) throw new Error(`unknown hash algorithm ${name}`);
  return {
    leaf: (data: Uint8Array) => digest(concat(new Uint8Array([0]), data)),
    children: (l: Uint8Array, r: Uint8Array) => digest(concat(new Uint8Array([1]), l, r)),
  };
}

const bitLength = (n: number) => (n === 0 ? 0 : Math.floor(Math.log2(n)) + 1);
const popcount = (n: number) => n.toString(2).split("").filter((c) => c === "1").length;

/** domain/merkle.py root_from_inclusion_proof, line by line. */
export async function rootFromInclusionProof(
  alg: string, leafIndex: number, treeSize: number, leafHash: Uint8Array, proof: Uint8Array[],
): Promise<Uint8Array> {
  const h = hasher(alg);
  if (leafIndex < 0 || treeSize < 0) throw new Error(`negative index ${leafIndex} or size ${treeSize}`);
  if (leafIndex >= treeSize) throw new Error(`leaf index ${leafIndex} is beyond tree size ${treeSize}`);
  if (leafHash.length !== 32) throw new Error("leaf hash is not 32 bytes");
  const inner = bitLength(leafIndex ^ (treeSize - 1));
  const border = popcount(Math.floor(leafIndex / 2 ** inner));
  if (proof.length !== inner + border) throw new Error(`proof has ${proof.length} hashes, expected ${inner + border}`);
  proof.forEach((p, i) => {
    if (p.length !== 32) throw new Error(`proof hash ${i} is not 32 bytes`);
  });
  let node = leafHash;
  for (let i = 0; i < inner; i++) {
    node = Math.floor(leafIndex / 2 ** i) % 2 === 0 ? await h.children(node, proof[i]) : await h.children(proof[i], node);
  }
  for (let i = inner; i < proof.length; i++) node = await h.children(proof[i], node);
  return node;
}

export function checkpointMessage(c: Receipt["checkpoint"]): Uint8Array {
  return enc.encode(
    canonicalJson({
      chain_head: c.chain_head, hash_alg: c.hash_alg, key_id: c.key_id, ledger_id: c.ledger_id, root: c.root,
      signed_at: c.signed_at, tree_size: c.tree_size, type: "nexus-checkpoint/v1",
    }),
  );
}

/** Every check a third party makes with the receipt alone: entry hash, inclusion, key id, signature. */
export async function verifyReceipt(r: Receipt): Promise<Check[]> {
  const checks: Check[] = [];
  const run = async (name: string, f: () => Promise<[boolean, string]>) => {
    try {
      const [ok, detail] = await f();
      checks.push({ name, ok, detail });
    } catch (e) {
      checks.push({ name, ok: false, detail: String((e as Error).message ?? e) });
    }
  };
  const alg = r.ledger.hash_alg;
  const e = r.entry;
  await run("Entry hash recomputed from the entry's fields", async () => {
    const envelope = {
      event_id: e.event_id, format: 1, ledger_id: r.ledger.ledger_id, metadata: e.metadata, payload: e.payload,
      position: e.position, recorded_at: e.recorded_at, schema_version: e.schema_version, stream_id: e.stream_id,
      stream_version: e.stream_version, tenant_id: e.tenant_id, type: e.type,
    };
    const computed = hex(await hasher(alg).leaf(enc.encode(canonicalJson(envelope))));
    return [computed === r.entry_hash, `${alg} ${computed.slice(0, 16)}… vs ${r.entry_hash.slice(0, 16)}…`];
  });
  await run("Inclusion proof reaches the checkpoint root (RFC 6962)", async () => {
    const p = r.inclusion_proof;
    if (p.tree_size !== r.checkpoint.tree_size) return [false, "proof and checkpoint tree sizes differ"];
    const root = await rootFromInclusionProof(alg, p.leaf_index, p.tree_size, unhex(r.entry_hash), p.hashes.map(unhex));
    return [hex(root) === r.checkpoint.root, `leaf ${p.leaf_index} of ${p.tree_size}, ${p.hashes.length} hashes`];
  });
  await run("Public key matches the checkpoint's key id", async () => {
    const id = hex(await sha256(unhex(r.public_key.public_key))).slice(0, 16);
    return [id === r.checkpoint.key_id, `key id ${id}`];
  });
  await run("Ed25519 signature on the checkpoint", async () => {
    const ok = ed25519.verify(unhex(r.checkpoint.signature), checkpointMessage(r.checkpoint), unhex(r.public_key.public_key));
    return [ok, `signed ${r.checkpoint.signed_at}`];
  });
  return checks;
}
