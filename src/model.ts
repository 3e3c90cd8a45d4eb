/**
 * The sidebar's state, fed by the REST API; views re-render on `changed`.
 *
 * Download jobs live in the Jupyter server, so the model only mirrors them: it polls the job
 * list (every second while one runs, rarely otherwise) and survives page reloads for free.
 */
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { localVariants, qualityBody } from './quality';
import { requestAPI, streamAPI } from './request';
import {
  ApiError,
  FINISHED_STATUSES,
  IBenchmarkOptions,
  IBenchmarkRun,
  IDownloadJob,
  ILocalModel,
  IQualityJob,
  IQualityOptions,
  ISearchQuery,
  ISearchResponse,
  ISearchResult,
  IVariantsResponse
} from './tokens';

/** The part of the state that changed. */
export type Section = 'search' | 'variants' | 'jobs' | 'models';

/** Milliseconds between job polls while a job runs, and while none does. */
export const POLL_BUSY_MS = 1000;
export const POLL_IDLE_MS = 30000;

function json(method: string, body?: unknown): RequestInit {
  return body === undefined ? { method } : { method, body: JSON.stringify(body) };
}

function asApiError(reason: unknown): ApiError {
  return reason instanceof ApiError ? reason : new ApiError(String(reason), 0);
}

/** What the sidebar shows: search results, variants, download jobs, local models. */
export class OffgridModel {
  results: ISearchResult[] = [];
  total = 0;
  searching = false;
  /** Variants by repository id: loading, loaded, or the error. */
  variants = new Map<string, IVariantsResponse | ApiError | 'loading'>();
  jobs: IDownloadJob[] = [];
  models: ILocalModel[] = [];
  /** The last error of each section (shown in place; cleared by the next success). */
  errors: Partial<Record<Section, ApiError>> = {};

  constructor() {
    this._poll = new Poll({
      factory: () => this.refreshJobs(),
      frequency: { interval: POLL_IDLE_MS, backoff: false },
      standby: 'never'
    });
  }

  /** Emitted with the section whose state changed. */
  get changed(): ISignal<this, Section> {
    return this._changed;
  }

  /** Start polling jobs and load the local models. */
  async start(): Promise<void> {
    await Promise.all([this.refreshJobs(), this.refreshModels()]);
    void this._poll.start();
  }

  /** Stop polling. */
  dispose(): void {
    this._poll.dispose();
  }

  private _fail(section: Section, reason: unknown): void {
    this.errors[section] = asApiError(reason);
    this._changed.emit(section);
  }

  private _ok(section: Section): void {
    delete this.errors[section];
    this._changed.emit(section);
  }

  /** Search the Hub with these filters (empty fields are left out). */
  async search(query: ISearchQuery): Promise<void> {
    const body: Record<string, unknown> = { limit: 20 };
    for (const [key, value] of Object.entries(query)) {
      if (value.trim() !== '') {
        body[key] = key === 'ram_gb' ? Number(value) : value.trim();
      }
    }
    this.searching = true;
    this._changed.emit('search');
    try {
      const answer = await requestAPI<ISearchResponse>('search', json('POST', body));
      this.results = answer.results;
      this.total = answer.total;
      this.variants.clear();
      this.errors.search = undefined;
    } catch (reason) {
      this.results = [];
      this.errors.search = asApiError(reason);
    } finally {
      this.searching = false;
    }
    this._changed.emit('search');
  }

  /** Load a repository's variants with their memory fit (in `ramGb`, else the RAM free). */
  async loadVariants(repository: string, ramGb = ''): Promise<void> {
    this.variants.set(repository, 'loading');
    this._changed.emit('variants');
    const query = new URLSearchParams({ repository });
    if (ramGb.trim() !== '') {
      query.set('ram_gb', ramGb.trim());
    }
    try {
      const answer = await requestAPI<IVariantsResponse>(`variants?${query}`);
      this.variants.set(repository, answer);
    } catch (reason) {
      this.variants.set(repository, asApiError(reason));
    }
    this._changed.emit('variants');
  }

  /** Forget a repository's variants (the result row folds). */
  closeVariants(repository: string): void {
    this.variants.delete(repository);
    this._changed.emit('variants');
  }

  /** Reload the job list; poll fast while a job runs. */
  async refreshJobs(): Promise<void> {
    const before = new Set(this.running().map(job => job.id));
    try {
      this.jobs = (await requestAPI<{ data: IDownloadJob[] }>('models/download')).data;
      this._ok('jobs');
    } catch (reason) {
      this._fail('jobs', reason);
      return;
    }
    const running = this.running();
    const interval = running.length > 0 ? POLL_BUSY_MS : POLL_IDLE_MS;
    if (this._poll.frequency.interval !== interval) {
      this._poll.frequency = { ...this._poll.frequency, interval };
    }
    if (this.jobs.some(job => before.has(job.id) && job.status === 'done')) {
      await this.refreshModels();
    }
  }

  /** Jobs whose thread has not ended. */
  running(): IDownloadJob[] {
    return this.jobs.filter(job => !FINISHED_STATUSES.includes(job.status));
  }

  private _putJob(job: IDownloadJob): void {
    this.jobs = [...this.jobs.filter(other => other.id !== job.id), job];
    this._changed.emit('jobs');
  }

  /** Start downloading a file (the server resumes its partial download, if any). */
  async download(repository: string, fileName: string): Promise<void> {
    try {
      const body = { repository, file_name: fileName };
      this._putJob(await requestAPI<IDownloadJob>('models/download', json('POST', body)));
      this._ok('jobs');
      this._poll.frequency = { ...this._poll.frequency, interval: POLL_BUSY_MS };
      void this._poll.refresh();
    } catch (reason) {
      this._fail('jobs', reason);
    }
  }

  /** Ask the server to stop a job (its partial file stays, for Resume). */
  async cancel(jobId: string): Promise<void> {
    try {
      this._putJob(await requestAPI<IDownloadJob>(`models/download/${jobId}`, json('DELETE')));
    } catch (reason) {
      this._fail('jobs', reason);
    }
  }

  /** Start a cancelled or failed job again. */
  resume(job: IDownloadJob): Promise<void> {
    return this.download(job.repository, job.file_name);
  }

  /** Reload the local models. */
  async refreshModels(): Promise<void> {
    try {
      const listed = await requestAPI<{ data: ILocalModel[] }>('models?details=true');
      this.models = listed.data;
      this._ok('models');
    } catch (reason) {
      this._fail('models', reason);
    }
  }

  /** Delete a local model (all its files). */
  async deleteModel(name: string): Promise<void> {
    try {
      await requestAPI(`models/${encodeURIComponent(name)}`, json('DELETE'));
    } catch (reason) {
      this._fail('models', reason);
      return;
    }
    await this.refreshModels();
  }

  /** Re-hash a local model against the Hub's sha256; true when it matches. */
  async verifyModel(name: string): Promise<boolean | null> {
    try {
      const answer = await requestAPI<{ ok: boolean }>(
        `models/${encodeURIComponent(name)}/verify`,
        json('POST')
      );
      this._ok('models');
      return answer.ok;
    } catch (reason) {
      this._fail('models', reason);
      return null;
    }
  }

  private _changed = new Signal<this, Section>(this);
  private _poll: Poll;
}

/**
 * Quality runs of one model's variants: the server runs them as jobs, so a reopened tab finds
 * its last one again (and follows it while it runs).
 */
export class QualityModel {
  /** The local variants of the model (itself included), largest first. */
  variants: ILocalModel[] = [];
  /** The model's Hub repo, when the library knows it. */
  repo: string | null = null;
  /** The last run of these variants (or of the repo). */
  job: IQualityJob | null = null;
  error: ApiError | null = null;

  constructor(readonly modelName: string) {}

  /** Emitted whenever variants, the job or the error change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Whether the job has not ended. */
  get running(): boolean {
    return this.job !== null && !FINISHED_STATUSES.includes(this.job.status);
  }

  /** Load the local variants and the last kept run of them; follow it if it still runs. */
  async load(): Promise<void> {
    try {
      const [models, jobs] = await Promise.all([
        requestAPI<{ data: ILocalModel[] }>('models?details=true'),
        requestAPI<{ data: IQualityJob[] }>('quality')
      ]);
      this.variants = localVariants(this.modelName, models.data);
      this.repo = this.variants.find(v => v.id === this.modelName)?.repo_id ?? null;
      const mine = jobs.data.filter(job => this._isMine(job));
      this.job = mine.length > 0 ? mine[mine.length - 1] : null;
      this.error = null;
    } catch (reason) {
      this.error = asApiError(reason);
    }
    this._changed.emit();
    if (this.running) {
      await this._follow(this.job!.id);
    }
  }

  /** Start a run on the server and follow its progress until it ends. */
  async start(options: IQualityOptions): Promise<void> {
    this.error = null;
    try {
      this.job = await requestAPI<IQualityJob>('quality', json('POST', qualityBody(options)));
    } catch (reason) {
      this.error = asApiError(reason);
      this._changed.emit();
      return;
    }
    this._changed.emit();
    await this._follow(this.job.id);
  }

  /** Ask the server to stop the run (at its next decode). */
  async cancel(): Promise<void> {
    if (this.job === null) {
      return;
    }
    try {
      this.job = await requestAPI<IQualityJob>(`quality/${this.job.id}`, json('DELETE'));
    } catch (reason) {
      this.error = asApiError(reason);
    }
    this._changed.emit();
  }

  /** Stop following the run (the tab closed; the run goes on in the server). */
  dispose(): void {
    this._abort.abort();
  }

  private _isMine(job: IQualityJob): boolean {
    const model = job.request.model;
    return Array.isArray(model) ? model.includes(this.modelName) : model === this.repo;
  }

  /** The job's events (its JSON whenever it changed) until it ends. */
  private async _follow(id: string): Promise<void> {
    try {
      await streamAPI(`quality/${id}/events`, { method: 'GET', signal: this._abort.signal }, data => {
        if (data !== '[DONE]') {
          this.job = JSON.parse(data) as IQualityJob;
          this._changed.emit();
        }
      });
    } catch (reason) {
      if (!this._abort.signal.aborted) {
        this.error = asApiError(reason);
        this._changed.emit();
      }
    }
  }

  private _abort = new AbortController();
  private _changed = new Signal<this, void>(this);
}

/** Benchmark runs of one model: the server keeps them, so a reopened tab shows them again. */
export class BenchmarkModel {
  runs: IBenchmarkRun[] = [];
  running = false;
  error: ApiError | null = null;
  /** Quality runs of the model's variants (its changes are this model's changes too). */
  readonly quality: QualityModel;

  constructor(readonly modelName: string) {
    this.quality = new QualityModel(modelName);
    this.quality.changed.connect(() => this._changed.emit());
  }

  /** Emitted whenever runs, running or error change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Load the runs the server kept for this model. */
  async load(): Promise<void> {
    try {
      const query = new URLSearchParams({ model: this.modelName });
      this.runs = (await requestAPI<{ data: IBenchmarkRun[] }>(`benchmark?${query}`)).data;
      this.error = null;
    } catch (reason) {
      this.error = asApiError(reason);
    }
    this._changed.emit();
  }

  /** Run a benchmark on the server; its result joins `runs`. */
  async run(options: IBenchmarkOptions): Promise<void> {
    this.running = true;
    this.error = null;
    this._changed.emit();
    try {
      const body = { model: this.modelName, ...options };
      this.runs = [...this.runs, await requestAPI<IBenchmarkRun>('benchmark', json('POST', body))];
    } catch (reason) {
      this.error = asApiError(reason);
    } finally {
      this.running = false;
    }
    this._changed.emit();
  }

  private _changed = new Signal<this, void>(this);
}
