/**
 * One chat with a local model: messages, the reply being streamed, its usage line.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { streamAPI } from '../request';
import { ApiError, IChatMessage, IUsage } from '../tokens';

interface IChunk {
  choices?: { delta?: { content?: string } }[];
  usage?: { prompt_tokens: number; completion_tokens: number };
  error?: { message: string; hint?: string };
}

/** A chat's state; `changed` fires on every streamed piece. */
export class ChatModel {
  messages: IChatMessage[] = [];
  streaming = false;
  usage: IUsage | null = null;
  error: ApiError | null = null;

  constructor(readonly modelName: string) {}

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Send a user message and stream the assistant's reply into `messages`. */
  async send(text: string): Promise<void> {
    if (this.streaming || text.trim() === '') {
      return;
    }
    this.messages = [...this.messages, { role: 'user', content: text }];
    const history = this.messages.map(m => ({ role: m.role, content: m.content }));
    const reply: IChatMessage = { role: 'assistant', content: '' };
    this.messages = [...this.messages, reply];
    this.streaming = true;
    this.error = null;
    this.usage = null;
    this._changed.emit();
    this._abort = new AbortController();
    const started = performance.now();
    const seen: { firstToken?: number; usage?: IChunk['usage'] } = {};
    const body = {
      model: this.modelName,
      messages: history,
      stream: true,
      stream_options: { include_usage: true }
    };
    try {
      await streamAPI(
        'chat/completions',
        { method: 'POST', body: JSON.stringify(body), signal: this._abort.signal },
        data => {
          if (data === '[DONE]') {
            return;
          }
          const chunk = JSON.parse(data) as IChunk;
          if (chunk.error) {
            this.error = new ApiError(chunk.error.message, 500, chunk.error.hint);
          }
          const piece = chunk.choices?.[0]?.delta?.content ?? '';
          if (piece) {
            seen.firstToken ??= performance.now();
            reply.content += piece;
            this.messages = [...this.messages];
          }
          seen.usage = chunk.usage ?? seen.usage;
          this._changed.emit();
        }
      );
    } catch (reason) {
      if (!(reason instanceof DOMException && reason.name === 'AbortError')) {
        this.error = reason instanceof ApiError ? reason : new ApiError(String(reason), 0);
      }
    } finally {
      this.streaming = false;
      this._abort = null;
    }
    const { firstToken, usage } = seen;
    if (usage && firstToken !== undefined) {
      const seconds = Math.max((performance.now() - firstToken) / 1000, 1e-3);
      this.usage = {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        tokens_per_second: Math.max(usage.completion_tokens - 1, 0) / seconds,
        first_token_ms: firstToken - started
      };
    }
    this._changed.emit();
  }

  /** Stop the reply being streamed (the server stops generating). */
  stop(): void {
    this._abort?.abort();
  }

  /** Forget the conversation. */
  clear(): void {
    this.stop();
    this.messages = [];
    this.usage = null;
    this.error = null;
    this._changed.emit();
  }

  private _abort: AbortController | null = null;
  private _changed = new Signal<this, void>(this);
}
