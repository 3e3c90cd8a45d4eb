/**
 * The model layer against a mocked `requestAPI` / `streamAPI` (as jupyterlab-git mocks git.ts).
 */
import { ChatModel } from '../chat/model';
import { BenchmarkModel, OffgridModel, POLL_BUSY_MS, POLL_IDLE_MS, QualityModel } from '../model';
import { parseEvents } from '../events';
import { requestAPI, streamAPI } from '../request';
import { ApiError, IDownloadJob, IQualityJob } from '../tokens';

jest.mock('../request', () => ({
  requestAPI: jest.fn(),
  streamAPI: jest.fn()
}));

const mockRequest = requestAPI as jest.MockedFunction<typeof requestAPI>;
const mockStream = streamAPI as jest.MockedFunction<typeof streamAPI>;

function job(id: string, status: string, fraction = 0.5): IDownloadJob {
  return {
    id,
    repository: 'org/repo-GGUF',
    file_name: 'repo-Q4_K_M.gguf',
    status,
    bytes: 50,
    total: 100,
    speed: 10,
    eta: 5,
    fraction,
    model: status === 'done' ? 'repo-Q4_K_M' : null,
    error: null
  };
}

/** Answer requests by "METHOD endpoint" (the query string left out). */
function answer(routes: Record<string, unknown>): void {
  mockRequest.mockImplementation(async (endPoint: string, init: RequestInit = {}) => {
    const key = `${init.method ?? 'GET'} ${endPoint.split('?')[0]}`;
    if (!(key in routes)) {
      throw new Error(`unexpected request ${key}`);
    }
    const value = routes[key];
    if (value instanceof Error) {
      throw value;
    }
    return typeof value === 'function' ? value(endPoint, init) : value;
  });
}

let model: OffgridModel;

beforeEach(() => {
  mockRequest.mockReset();
  mockStream.mockReset();
  model = new OffgridModel();
});

afterEach(() => model.dispose());

describe('OffgridModel search', () => {
  it('posts only the filled-in filters and keeps the results', async () => {
    const result = {
      model: { id: 'org/repo-GGUF', downloads: 10, likes: 1, tags: [] },
      gguf_files: [],
      best_variant: null,
      score: 1
    };
    answer({ 'POST search': { total: 7, results: [result] } });
    const sections: string[] = [];
    model.changed.connect((_, section) => sections.push(section));

    await model.search({ query: ' qwen ', author: '', quant: 'Q4_K_M', sort: 'likes', ram_gb: '8' });

    const body = JSON.parse(mockRequest.mock.calls[0][1]!.body as string);
    expect(body).toEqual({ limit: 20, query: 'qwen', quant: 'Q4_K_M', sort: 'likes', ram_gb: 8 });
    expect(model.results).toEqual([result]);
    expect(model.total).toBe(7);
    expect(model.searching).toBe(false);
    expect(sections).toEqual(['search', 'search']); // "searching", then the results
  });

  it('keeps the API error (message and hint) for the view', async () => {
    answer({ 'POST search': new ApiError('Invalid sort: banana', 400, 'one of downloads, likes') });
    await model.search({ query: '', author: '', quant: '', sort: 'banana', ram_gb: '' });
    expect(model.results).toEqual([]);
    expect(model.errors.search?.message).toBe('Invalid sort: banana');
    expect(model.errors.search?.hint).toBe('one of downloads, likes');
  });

  it('loads variants with the RAM to fit, and a failure stays with its repository', async () => {
    const variants = { repository: 'org/repo-GGUF', available_gb: 8, variants: [] };
    answer({ 'GET variants': variants });
    await model.loadVariants('org/repo-GGUF', '8');
    expect(mockRequest.mock.calls[0][0]).toBe('variants?repository=org%2Frepo-GGUF&ram_gb=8');
    expect(model.variants.get('org/repo-GGUF')).toEqual(variants);

    answer({ 'GET variants': new ApiError('Repository not found', 404) });
    await model.loadVariants('org/gone');
    expect((model.variants.get('org/gone') as ApiError).status).toBe(404);
    model.closeVariants('org/gone');
    expect(model.variants.has('org/gone')).toBe(false);
  });
});

describe('OffgridModel downloads', () => {
  it('polls fast while a job runs and slowly once none does', async () => {
    answer({ 'GET models/download': { data: [job('a', 'downloading')] } });
    await model.refreshJobs();
    expect(model.running().map(j => j.id)).toEqual(['a']);
    expect((model as any)._poll.frequency.interval).toBe(POLL_BUSY_MS);

    answer({
      'GET models/download': { data: [job('a', 'done', 1)] },
      'GET models': { data: [{ id: 'repo-Q4_K_M' }] }
    });
    await model.refreshJobs();
    expect(model.running()).toEqual([]);
    expect((model as any)._poll.frequency.interval).toBe(POLL_IDLE_MS);
    // The job that was running finished: the new model is listed without a reload.
    expect(model.models.map(m => m.id)).toEqual(['repo-Q4_K_M']);
  });

  it('starts, cancels and resumes a job through the server', async () => {
    answer({
      'POST models/download': (_: string, init: RequestInit) => ({
        ...job('b', 'starting'),
        file_name: JSON.parse(init.body as string).file_name
      }),
      'DELETE models/download/b': job('b', 'cancelling'),
      'GET models/download': { data: [] }
    });
    await model.download('org/repo-GGUF', 'repo-Q4_K_M.gguf');
    expect(model.jobs.map(j => [j.id, j.status])).toEqual([['b', 'starting']]);
    const posted = JSON.parse(mockRequest.mock.calls[0][1]!.body as string);
    expect(posted).toEqual({ repository: 'org/repo-GGUF', file_name: 'repo-Q4_K_M.gguf' });

    await model.cancel('b');
    expect(model.jobs.map(j => j.status)).toEqual(['cancelling']);

    await model.resume(job('b', 'cancelled'));
    const again = mockRequest.mock.calls.filter(c => c[1]?.method === 'POST');
    expect(again).toHaveLength(2);
    expect(model.jobs).toHaveLength(1); // the same job id is replaced, not duplicated
  });

  it('shows a refused download in place (the server is busy)', async () => {
    answer({ 'POST models/download': new ApiError('2 downloads are running', 503, 'wait') });
    await model.download('org/repo-GGUF', 'x.gguf');
    expect(model.errors.jobs?.message).toBe('2 downloads are running');
    expect(model.jobs).toEqual([]);
  });
});

describe('OffgridModel local models', () => {
  it('deletes a model by its encoded name and lists the rest', async () => {
    answer({
      'DELETE models/org%2Fa%20b': { deleted: true },
      'GET models': { data: [{ id: 'other' }] }
    });
    await model.deleteModel('org/a b');
    expect(mockRequest.mock.calls[0][0]).toBe('models/org%2Fa%20b');
    expect(mockRequest.mock.calls[1][0]).toBe('models?details=true');
    expect(model.models.map(m => m.id)).toEqual(['other']);
  });

  it('reports a verify result, and a failure as an error', async () => {
    answer({ 'POST models/m/verify': { id: 'm', ok: true } });
    expect(await model.verifyModel('m')).toBe(true);
    answer({ 'POST models/m/verify': new ApiError('m is corrupt', 502, 'download it again') });
    expect(await model.verifyModel('m')).toBeNull();
    expect(model.errors.models?.hint).toBe('download it again');
  });
});

describe('BenchmarkModel', () => {
  it('loads the kept runs of its model and appends a new run', async () => {
    const run = { id: 'r1', model_id: 'm' };
    answer({ 'GET benchmark': { data: [run] }, 'POST benchmark': { id: 'r2', model_id: 'm' } });
    const bench = new BenchmarkModel('m');
    await bench.load();
    expect(mockRequest.mock.calls[0][0]).toBe('benchmark?model=m');
    await bench.run({ prompt_tokens: 8, output_tokens: 4, iterations: 1 });
    const body = JSON.parse(mockRequest.mock.calls[1][1]!.body as string);
    expect(body).toEqual({ model: 'm', prompt_tokens: 8, output_tokens: 4, iterations: 1 });
    expect(bench.runs.map(r => r.id)).toEqual(['r1', 'r2']);
    expect(bench.running).toBe(false);
  });
});

describe('QualityModel', () => {
  const variants = [
    { id: 'tiny-Q8_0', size: 20, quantization: 'Q8_0', repo_id: null },
    { id: 'tiny-F32', size: 80, quantization: 'F32', repo_id: null },
    { id: 'other-Q8_0', size: 30, quantization: 'Q8_0', repo_id: null }
  ];
  function qjob(status: string, model: string | string[] = ['tiny-F32', 'tiny-Q8_0']): IQualityJob {
    return {
      id: 'q1',
      kind: 'quality',
      status,
      request: { model, n_ctx: 64, chunks: 1, dataset: null, text_chars: 9, quants: null, reference: null, speed: true },
      progress: status === 'queued' ? null : { model: 'tiny-F32', done: 1, total: 1, ppl: 9.5 },
      result: status === 'done' ? [] : null,
      error: null
    };
  }

  it('posts the local variants and follows the job until its table arrives', async () => {
    answer({ 'GET models': { data: variants }, 'GET quality': { data: [] }, 'POST quality': qjob('queued') });
    mockStream.mockImplementation(async (_endPoint, _init, onData) => {
      onData(JSON.stringify(qjob('running')));
      onData(JSON.stringify(qjob('done')));
      onData('[DONE]');
    });
    const quality = new QualityModel('tiny-Q8_0');
    const statuses: string[] = [];
    quality.changed.connect(() => statuses.push(quality.job?.status ?? 'none'));
    await quality.load();
    expect(quality.variants.map(v => v.id)).toEqual(['tiny-F32', 'tiny-Q8_0']);
    expect(quality.job).toBeNull();

    const options = { n_ctx: 64, chunks: 1, speed: true, reference: '', quants: '', source: 'text', text: 'Some text' };
    await quality.start({ ...options, model: ['tiny-F32', 'tiny-Q8_0'] });
    const body = JSON.parse(mockRequest.mock.calls[2][1]!.body as string);
    expect(body).toEqual({ model: ['tiny-F32', 'tiny-Q8_0'], n_ctx: 64, chunks: 1, speed: true, text: 'Some text' });
    expect(mockStream.mock.calls[0][0]).toBe('quality/q1/events');
    expect(statuses).toEqual(['none', 'queued', 'running', 'done']);
    expect(quality.running).toBe(false);
    expect(quality.job?.result).toEqual([]);
  });

  it('finds its running job again, follows it, and cancels it', async () => {
    answer({
      'GET models': { data: variants },
      'GET quality': { data: [qjob('done', ['other-Q8_0']), qjob('running')] },
      'DELETE quality/q1': qjob('cancelling')
    });
    mockStream.mockImplementation(async () => undefined); // the job goes on
    const quality = new QualityModel('tiny-F32');
    await quality.load();
    expect(quality.job?.status).toBe('running');
    expect(mockStream.mock.calls[0][0]).toBe('quality/q1/events');
    await quality.cancel();
    expect(quality.job?.status).toBe('cancelling');
    expect(quality.running).toBe(true);
  });

  it('shows a refused run in place', async () => {
    answer({ 'POST quality': new ApiError('No local model named x', 404, 'list them') });
    const quality = new QualityModel('x');
    const options = { n_ctx: 64, chunks: 0, speed: false, reference: '', quants: '', source: 'sample', text: '' };
    await quality.start({ ...options, model: ['x'] });
    expect(quality.error?.hint).toBe('list them');
    expect(quality.job).toBeNull();
    expect(mockStream).not.toHaveBeenCalled();
  });
});

describe('ChatModel', () => {
  function chunk(content: string): string {
    return JSON.stringify({ choices: [{ delta: { content } }] });
  }

  it('streams the reply piece by piece and ends with a usage line', async () => {
    const seen: string[] = [];
    mockStream.mockImplementation(async (_endPoint, _init, onData) => {
      onData(JSON.stringify({ choices: [{ delta: { role: 'assistant', content: '' } }] }));
      onData(chunk('Hel'));
      onData(chunk('lo'));
      onData(JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 3 } }));
      onData('[DONE]');
    });
    const chat = new ChatModel('m');
    chat.changed.connect(() => seen.push(chat.messages[chat.messages.length - 1].content));
    await chat.send('Hi');

    const [endPoint, init] = mockStream.mock.calls[0];
    expect(endPoint).toBe('chat/completions');
    const body = JSON.parse(init.body as string);
    expect(body.stream).toBe(true);
    expect(body.messages).toEqual([{ role: 'user', content: 'Hi' }]);
    expect(seen).toContain('Hel'); // the view saw the partial reply
    expect(chat.messages).toEqual([
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' }
    ]);
    expect(chat.usage?.completion_tokens).toBe(3);
    expect(chat.usage?.prompt_tokens).toBe(5);
    expect(chat.streaming).toBe(false);
  });

  it('sends the history, shows a streamed error, and Clear forgets everything', async () => {
    mockStream.mockImplementation(async (_e, _i, onData) => onData(chunk('A')));
    const chat = new ChatModel('m');
    await chat.send('one');
    mockStream.mockImplementation(async (_e, _i, onData) =>
      onData(JSON.stringify({ error: { message: 'Context overflow', hint: 'shorter' } }))
    );
    await chat.send('two');
    const body = JSON.parse(mockStream.mock.calls[1][1].body as string);
    expect(body.messages.map((m: { content: string }) => m.content)).toEqual(['one', 'A', 'two']);
    expect(chat.error?.message).toBe('Context overflow');
    chat.clear();
    expect(chat.messages).toEqual([]);
    expect(chat.error).toBeNull();
  });

  it('Stop aborts the request and keeps what arrived', async () => {
    const chat = new ChatModel('m');
    mockStream.mockImplementation(
      (_e, init, onData) =>
        new Promise((_, reject) => {
          onData(chunk('partial'));
          init.signal!.addEventListener('abort', () =>
            reject(new DOMException('aborted', 'AbortError'))
          );
        })
    );
    const sending = chat.send('go');
    chat.stop();
    await sending;
    expect(chat.messages[1].content).toBe('partial');
    expect(chat.error).toBeNull();
    expect(chat.streaming).toBe(false);
  });
});

describe('parseEvents', () => {
  it('splits complete events and keeps the unfinished rest', () => {
    const { data, rest } = parseEvents('data: {"a":1}\n\ndata: [DONE]\n\ndata: {"b"');
    expect(data).toEqual(['{"a":1}', '[DONE]']);
    expect(rest).toBe('data: {"b"');
  });
});
