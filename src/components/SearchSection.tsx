import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatBytes, formatCount, formatOffload } from '../format';
import { OffgridModel } from '../model';
import { ISearchQuery, ISearchResult, IVariantsResponse } from '../tokens';
import { ErrorNote } from './ErrorNote';

const SORTS = ['downloads', 'likes', 'relevance', 'trending', 'created', 'modified'];

/** The search form and its results; a result opens its variants, each with Download. */
export function SearchSection(props: { model: OffgridModel }): JSX.Element {
  const { model } = props;
  const [query, setQuery] = React.useState<ISearchQuery>({
    query: '',
    author: '',
    quant: '',
    sort: 'downloads',
    ram_gb: ''
  });
  const field = (name: keyof ISearchQuery) => ({
    value: query[name],
    onChange: (event: React.ChangeEvent<HTMLInputElement | HTMLSelectElement>) =>
      setQuery({ ...query, [name]: event.target.value })
  });
  const submit = (event: React.FormEvent) => {
    event.preventDefault();
    void model.search(query);
  };
  return (
    <div className="offgrid-Section offgrid-Search">
      <form className="offgrid-SearchForm" onSubmit={submit}>
        <input
          className="jp-mod-styled offgrid-SearchInput"
          placeholder="Search GGUF models (e.g. qwen)"
          aria-label="Search query"
          data-testid="offgrid-search-input"
          {...field('query')}
        />
        <div className="offgrid-SearchFilters">
          <input className="jp-mod-styled" placeholder="author" aria-label="Author" {...field('author')} />
          <input className="jp-mod-styled" placeholder="quant" aria-label="Quantization" {...field('quant')} />
          <select className="jp-mod-styled" aria-label="Sort" {...field('sort')}>
            {SORTS.map(sort => (
              <option key={sort} value={sort}>
                {sort}
              </option>
            ))}
          </select>
          <input
            className="jp-mod-styled"
            placeholder="RAM GB"
            aria-label="RAM to fit, in GB"
            inputMode="decimal"
            {...field('ram_gb')}
          />
        </div>
        <Button type="submit" data-testid="offgrid-search-button" disabled={model.searching}>
          {model.searching ? 'Searching…' : 'Search'}
        </Button>
      </form>
      <ErrorNote error={model.errors.search} />
      {model.results.length > 0 && (
        <div className="offgrid-Hint">
          {model.results.length} of {model.total} repositories
        </div>
      )}
      <ul className="offgrid-List">
        {model.results.map(result => (
          <ResultRow key={result.model.id} model={model} result={result} ramGb={query.ram_gb} />
        ))}
      </ul>
    </div>
  );
}

function ResultRow(props: { model: OffgridModel; result: ISearchResult; ramGb: string }) {
  const { model, result } = props;
  const id = result.model.id;
  const state = model.variants.get(id);
  const best = result.best_variant;
  const toggle = () =>
    state === undefined ? void model.loadVariants(id, props.ramGb) : model.closeVariants(id);
  return (
    <li className="offgrid-Result" data-testid="offgrid-result">
      <button className="offgrid-ResultHead" onClick={toggle} aria-expanded={state !== undefined}>
        <span className="offgrid-ResultName">{id}</span>
        <span className="offgrid-Hint">
          ↓ {formatCount(result.model.downloads)} · ♥ {formatCount(result.model.likes)}
          {best && ` · ${best.quantization ?? '?'} ${formatBytes((best.size_gb ?? NaN) * 1e9)}`}
          {result.fits && ` · ${result.fits}`}
        </span>
      </button>
      {state === 'loading' && <div className="offgrid-Hint">Reading the variants’ headers…</div>}
      {state instanceof Error && <ErrorNote error={state} />}
      {state && state !== 'loading' && !(state instanceof Error) && (
        <VariantList model={model} variants={state} />
      )}
    </li>
  );
}

function VariantList(props: { model: OffgridModel; variants: IVariantsResponse }) {
  const { model, variants } = props;
  return (
    <table className="offgrid-Variants">
      <tbody>
        {variants.variants.map(variant => (
          <tr key={variant.filename} data-testid="offgrid-variant">
            <td>
              {variant.quant ?? '?'}
              {variant.recommended && (
                <span className="offgrid-Recommended" title="recommended for this machine">
                  ★
                </span>
              )}
            </td>
            <td>{formatBytes(variant.size)}</td>
            <td
              className={`offgrid-Fit offgrid-Fit-${(variant.fits ?? 'unknown').replace(' ', '-')}`}
              title={variant.error ?? `needs ${variant.total_gb?.toFixed(2)} GB of ${variants.available_gb.toFixed(1)} GB`}
            >
              {variant.fits ?? 'unknown'}
              {formatOffload(variant) && (
                <span className="offgrid-Offload" data-testid="offgrid-offload">
                  {` · ${formatOffload(variant)}`}
                </span>
              )}
            </td>
            <td>
              <Button
                small
                data-testid="offgrid-download"
                title={variant.filename}
                onClick={() => void model.download(variants.repository, variant.filename)}
              >
                Download
              </Button>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
