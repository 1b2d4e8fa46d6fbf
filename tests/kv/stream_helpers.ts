/**
 * Byte streams for the tests of the streamed file formats (backup and
 * snapshot files).
 *
 * @module
 */

/** Everything `stream` yields, as one array. */
export async function bytesOf(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** `bytes` as a stream of about `pieces` chunks, so that lines cross chunk boundaries. */
export function streamOf(bytes: Uint8Array, pieces = 3): ReadableStream<Uint8Array> {
  const size = Math.max(1, Math.ceil(bytes.length / pieces));
  return new ReadableStream({
    start(controller) {
      for (let at = 0; at < bytes.length; at += size) {
        controller.enqueue(bytes.slice(at, at + size));
      }
      controller.close();
    },
  });
}
