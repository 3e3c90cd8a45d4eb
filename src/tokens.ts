/**
 * Types of the offgrid REST API (`{base_url}offgrid/v1/...`) and the extension's command ids.
 */

/** The body of every API error: `{"error": {message, type, code, hint?}}`. */
export interface IApiErrorBody {
  message: string;
  type: string;
  code: string;
  hint?: string;
}

/** An API call that failed: the server's message and hint, and the HTTP status. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly hint?: string
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The error of a response body (`{"error": {...}}`), or a generic one. */
  static from(status: number, body: unknown): ApiError {
    const error = (body as { error?: IApiErrorBody } | null)?.error;
    if (error && typeof error.message === 'string') {
      return new ApiError(error.message, status, error.hint);
    }
    return new ApiError(`The server answered ${status}`, status);
  }
}

/** One GGUF file (or split model) of a Hub repository, as `/v1/search` lists it. */
export interface IGgufFile {
  filename: string;
  size: number | null;
  size_gb: number | null;
  quantization: string | null;
  parameter_size: string | null;
  is_chat: boolean;
}

/** One repository found by `/v1/search`. */
export interface ISearchResult {
  model: { id: string; downloads: number; likes: number; tags: string[] };
  gguf_files: IGgufFile[];
  best_variant: { filename: string; quantization: string | null; size_gb: number | null } | null;
  score: number;
  fits?: string | null;
  total_gb?: number | null;
}

/** What `/v1/search` answers. */
export interface ISearchResponse {
  total: number;
  results: ISearchResult[];
}

/** The filters of a search (empty strings are left out of the request). */
export interface ISearchQuery {
  query: string;
  author: string;
  quant: string;
  sort: string;
  ram_gb: string;
}

/** One variant of a repository with its memory estimate (`/v1/variants`). */
export interface IVariant {
  filename: string;
  quant: string | null;
  size: number | null;
  size_gb: number | null;
  total_gb: number | null;
  fits: 'fits' | 'tight' | 'too large' | null;
  recommended: boolean;
  error: string | null;
  /** Where the layers would go on this machine's devices (`offgrid_nb.fit.plan_offload`). */
  offload?: 'gpu' | 'partial' | 'cpu' | 'too large' | null;
  gpu_layers?: number | null;
  n_layers?: number | null;
}

/** What `/v1/variants` answers. */
export interface IVariantsResponse {
  repository: string;
  available_gb: number;
  variants: IVariant[];
}

/** A download job of the server (`/v1/models/download[/{id}]`). */
export interface IDownloadJob {
  id: string;
  repository: string;
  file_name: string;
  status: string;
  bytes: number;
  total: number | null;
  speed: number;
  eta: number | null;
  fraction: number | null;
  model: string | null;
  error: IApiErrorBody | null;
}

/** Job statuses after which the job's thread has ended. */
export const FINISHED_STATUSES = ['done', 'failed', 'cancelled'];

/** A model of the local library (`GET /v1/models`). */
export interface ILocalModel {
  id: string;
  size: number;
  size_gb: number;
  quantization: string | null;
  parameter_size: string | null;
  repo_id: string | null;
  architecture: string | null;
  context_length: number | null;
  chat_template: boolean;
  loaded: boolean;
}

/** One benchmark run kept by the server (`GET|POST /v1/benchmark`). */
export interface IBenchmarkRun {
  id: string;
  model_id: string;
  config: { prompt_tokens: number; output_tokens: number; iterations: number };
  results: {
    avg_prompt_tokens_per_sec: number;
    avg_generation_tokens_per_sec: number;
    avg_time_to_first_token_ms: number;
    avg_total_time_ms: number;
    peak_rss_mb: number;
  };
  started_at: string;
}

/** The options of a benchmark run. */
export interface IBenchmarkOptions {
  prompt_tokens: number;
  output_tokens: number;
  iterations: number;
}

/** One variant's row of a quality table (`offgrid_nb.quality.quality`); null: not measured. */
export interface IQualityRow {
  model: string;
  quant: string | null;
  file_size_mb: number;
  bits_per_weight: number;
  reference: boolean;
  ppl: number;
  ppl_err: number;
  ln_ppl_ratio: number;
  kld: number;
  kld_err: number;
  kld_p99: number;
  same_top_pct: number;
  same_top_err: number;
  tokens_scored: number;
  chunks: number;
  prompt_tokens_per_sec?: number | null;
  generation_tokens_per_sec?: number | null;
  memory_used_mb?: number | null;
}

/** A quality run of the server (`/v1/quality[/{id}]`): queued, running, then its table. */
export interface IQualityJob {
  id: string;
  kind: string;
  status: string;
  request: {
    model: string | string[];
    n_ctx: number;
    chunks: number | null;
    dataset: string | null;
    text_chars: number | null;
    quants: string[] | null;
    reference: string | null;
    speed: boolean;
  };
  progress: { model: string; done: number; total: number; ppl: number | null } | null;
  result: IQualityRow[] | null;
  error: IApiErrorBody | null;
}

/** What a quality run measures: local variants (by name) or a Hub repo's, and on what text. */
export interface IQualityOptions {
  /** Local model names, or a Hub repo id (its variants are downloaded). */
  model: string | string[];
  n_ctx: number;
  /** Chunks to score; 0: all. */
  chunks: number;
  speed: boolean;
  /** Empty: the largest file. */
  reference: string;
  /** Comma-separated quantizations; empty: all. */
  quants: string;
  /** `sample` (built in), a dataset name (`wikitext-2`), or `text` (then `text` is sent). */
  source: string;
  text: string;
}

/** One message of a chat. */
export interface IChatMessage {
  role: 'user' | 'assistant';
  content: string;
}

/** The usage line of a streamed reply. */
export interface IUsage {
  completion_tokens: number;
  prompt_tokens: number;
  tokens_per_second: number;
  first_token_ms: number;
}

/** Command ids. */
export namespace CommandIDs {
  export const openSidebar = 'offgrid:open-sidebar';
  export const search = 'offgrid:search';
  export const openChat = 'offgrid:open-chat';
  export const openBenchmark = 'offgrid:open-benchmark';
  export const refresh = 'offgrid:refresh';
}

/** The sidebar's widget id. */
export const SIDEBAR_ID = 'offgrid-sidebar';
