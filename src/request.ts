/**
 * Calls to the offgrid REST API of this Jupyter server, with Jupyter's own auth (token, XSRF).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { parseEvents } from './events';
import { ApiError } from './tokens';

function url(endPoint: string, settings: ServerConnection.ISettings): string {
  return URLExt.join(settings.baseUrl, 'offgrid', 'v1', endPoint);
}

async function send(
  endPoint: string,
  init: RequestInit
): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url(endPoint, settings), init, settings);
  } catch (reason) {
    throw new ApiError(`The Jupyter server cannot be reached: ${reason}`, 0);
  }
  if (!response.ok) {
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      // not JSON: the generic message below
    }
    throw ApiError.from(response.status, body);
  }
  return response;
}

/**
 * Call an API endpoint and return its JSON answer.
 *
 * @param endPoint path under `offgrid/v1/` (with its query string)
 * @param init the fetch options (method, body)
 * @throws ApiError with the server's message and hint
 */
export async function requestAPI<T>(endPoint: string, init: RequestInit = {}): Promise<T> {
  const response = await send(endPoint, init);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/**
 * Call an endpoint that answers with server-sent events; `onData` gets each event's data.
 *
 * `init.signal` aborts the request (for a chat: the server stops generating).
 */
export async function streamAPI(
  endPoint: string,
  init: RequestInit,
  onData: (data: string) => void
): Promise<void> {
  const response = await send(endPoint, init);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let rest = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    const parsed = parseEvents(rest + decoder.decode(value, { stream: true }));
    rest = parsed.rest;
    parsed.data.forEach(onData);
  }
  parseEvents(rest + '\n\n').data.forEach(onData);
}
