/** Server-sent events, as our streaming endpoints send them. */

/**
 * Split a server-sent events text into the `data:` payloads of its complete events.
 *
 * @returns the payloads, and the unfinished remainder to prepend to the next chunk
 */
export function parseEvents(buffer: string): { data: string[]; rest: string } {
  const blocks = buffer.split(/\r?\n\r?\n/);
  const rest = blocks.pop() ?? '';
  const data = blocks
    .map(block =>
      block
        .split(/\r?\n/)
        .filter(line => line.startsWith('data:'))
        .map(line => line.slice(5).replace(/^ /, ''))
        .join('\n')
    )
    .filter(payload => payload !== '');
  return { data, rest };
}
