using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Knowledge;

/// <summary>Which search structure <see cref="KnowledgeRetrieverTransformer"/> uses.</summary>
public enum RetrieverIndexKind
{
    /// <summary>Exhaustive search (<see cref="ExactIndex"/>): the true neighbours; memory-bound, fine up to ~100k entries.</summary>
    Exact,
    /// <summary>Approximate graph search (<see cref="HnswIndex"/>): for large stores; recall against exact is measured
    /// at Fit and logged.</summary>
    Hnsw,
    /// <summary>Exact below <see cref="VectorIndexes.HnswMinimumFloats"/> (entries × dimension), HNSW from there on when its measured
    /// recall@16 reaches 0.99 (else exact): see <see cref="VectorIndexes"/>.</summary>
    Auto,
}

/// <summary>
/// Estimator for <see cref="KnowledgeRetrieverTransformer"/>: for each row's query embedding, the k most similar
/// knowledge-store entries (inner product of unit vectors = cosine similarity) with their soft labels.
/// </summary>
/// <remarks>
/// <para>Input: <see cref="Options.InputColumnName"/> (known-size vector of Single, the store's dimension; the
/// student's query embedding).</para>
/// <para>Output: <c>NeighborIds</c> (vector of Int32, k: entry indices, best first), <c>NeighborSimilarities</c>
/// (vector of Single, k), <c>NeighborSoftLabels</c> (vector of Single, k × labels, row-major: neighbour-major) and,
/// when <see cref="Options.NeighborTextsColumnName"/> is set, <c>NeighborTexts</c> (vector of Text, k).</para>
/// <para>Fit validates the store (entries, embeddings, k) and the input column, and builds the index (for HNSW: the
/// graph, with progress and cancellation through the MLContext). The store and the graph are saved in model.zip.</para>
/// <para>Fit, and the transformer on every schema it maps, refuse a query column whose encoder fingerprint differs
/// from the store's (<see cref="EncoderProvenance"/>; unknown on either side: no check).</para>
/// </remarks>
public sealed class KnowledgeRetrieverEstimator : IEstimator<KnowledgeRetrieverTransformer>
{
    /// <summary>Options of the retriever.</summary>
    public sealed class Options
    {
        /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
        internal static class Defaults
        {
            public const string InputColumnName = "Features";
            public const int K = 8;
            public const RetrieverIndexKind Index = RetrieverIndexKind.Auto;
        }

        /// <summary>Column with the query embedding (known-size vector of Single). Default "Features".</summary>
        public string InputColumnName = Defaults.InputColumnName;
        /// <summary>Number of neighbours per row. Default 8.</summary>
        public int K = Defaults.K;
        /// <summary>Output column of neighbour entry indices. Default "NeighborIds".</summary>
        public string NeighborIdsColumnName = "NeighborIds";
        /// <summary>Output column of neighbour similarities (cosine for unit vectors). Default "NeighborSimilarities".</summary>
        public string NeighborSimilaritiesColumnName = "NeighborSimilarities";
        /// <summary>Output column of neighbour soft labels, k × labels. Default "NeighborSoftLabels".</summary>
        public string NeighborSoftLabelsColumnName = "NeighborSoftLabels";
        /// <summary>Output column of neighbour texts, or null for none (the store is then saved without texts).
        /// Default null.</summary>
        public string? NeighborTextsColumnName;
        /// <summary>Search structure. Default <see cref="RetrieverIndexKind.Auto"/> (exact for stores below
        /// <see cref="VectorIndexes.HnswMinimumFloats"/>: entries × dimension).</summary>
        public RetrieverIndexKind Index = Defaults.Index;
        /// <summary>HNSW build/search parameters (used when <see cref="Index"/> is Hnsw, or Auto picks HNSW). Default:
        /// <see cref="HnswOptions"/>'s defaults (Auto: <see cref="VectorIndexes.AutoHnswOptions"/>) with the MLContext seed.</summary>
        public HnswOptions? Hnsw;
        /// <summary>L2-normalise each query before searching, so similarities are cosines whatever the query's scale.
        /// Default true.</summary>
        public bool NormalizeQueries = true;
        /// <summary>Progress of the HNSW build (stage "HnswBuild"), also logged through the MLContext. Default null.</summary>
        public IProgress<TrainingProgress>? Progress;
        /// <summary>Cancels the HNSW build. Default none.</summary>
        public CancellationToken Cancellation;
        /// <summary>
        /// The <see cref="IStoreEncoder.Fingerprint"/> of the encoder that produced the query column, for a column that
        /// does not carry it as an annotation (<see cref="EncoderProvenance"/>). Fit fails when it and the store's
        /// <see cref="KnowledgeStore.EncoderFingerprint"/> are both known and differ. Checked at Fit only, not saved: after a
        /// successful Fit it names the store's own encoder, which the saved store already records, so a saved copy would check
        /// nothing new (a loaded model checks the query column's annotation).
        /// Default null (unknown: no check).
        /// </summary>
        public string? QueryEncoderFingerprint;

        /// <summary>A copy of every setting (<see cref="HnswOptions"/> is an immutable record, and shared).</summary>
        internal Options Copy() => (Options)MemberwiseClone();
    }

    private readonly IHostEnvironment _env;
    private readonly KnowledgeStore _store;
    private readonly Options _options;

    internal KnowledgeRetrieverEstimator(IHostEnvironment env, KnowledgeStore store, Options options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _store = store ?? throw new ArgumentNullException(nameof(store));
        // A copy, as ML.NET's estimators keep theirs: a later edit of the caller's object would change Fit unchecked.
        _options = options = (options ?? throw new ArgumentNullException(nameof(options))).Copy();
        if (string.IsNullOrWhiteSpace(options.InputColumnName)) throw new ArgumentException("InputColumnName must be set.", nameof(options));
        foreach (var (name, value) in new[] { ("NeighborIdsColumnName", options.NeighborIdsColumnName), ("NeighborSimilaritiesColumnName", options.NeighborSimilaritiesColumnName), ("NeighborSoftLabelsColumnName", options.NeighborSoftLabelsColumnName) })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} must be set.", nameof(options));
        if (options.K < 1) throw new ArgumentOutOfRangeException(nameof(options), $"K must be >= 1, found {options.K}.");
    }

    /// <summary>Validates the store and the input column and builds the index.</summary>
    public KnowledgeRetrieverTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ValidateStore(_store, _options.K, _options.NeighborTextsColumnName);
        RetrieverColumns.RequireQuery(input.Schema, _options.InputColumnName, _store);
        EncoderProvenance.Check(_store.EncoderFingerprint, _options.QueryEncoderFingerprint, "Options.QueryEncoderFingerprint");
        var host = new ComponentHost(_env, nameof(KnowledgeRetrieverEstimator), _options.Hnsw?.Seed, _options.Progress, _options.Cancellation);
        var hnswOptions = _options.Hnsw ?? (_options.Index == RetrieverIndexKind.Auto ? VectorIndexes.AutoHnswOptions(host.Seed) : new HnswOptions { Seed = host.Seed });
        var index = VectorIndexes.For(_store, _options.Index, hnswOptions,
            new SyncProgress(done => host.Report("HnswBuild", done, _store.Count)), _options.Cancellation);
        if (index is HnswIndex built)
            host.Info($"HNSW over {_store.Count} entries: M {hnswOptions.M}, efConstruction {hnswOptions.EfConstruction}, efSearch {built.EfSearch}, " +
                      $"recall@{hnswOptions.CalibrationK} vs exact {built.MeasuredRecall:F3}, {built.MaxLevel + 1} layers" +
                      (built.SearchesExactly ? "; the beam covers the store, so searches scan it exactly." : "."));
        else if (_options.Index == RetrieverIndexKind.Auto && VectorIndexes.PrefersHnsw(_store.Count, _store.Dimension))
            host.Info($"Exact search over {_store.Count} entries: the HNSW graph did not reach recall@{hnswOptions.CalibrationK} {VectorIndexes.AutoTargetRecall}.");
        return new KnowledgeRetrieverTransformer(_env, _store, index, _options.InputColumnName, _options.K, _options.NeighborIdsColumnName,
            _options.NeighborSimilaritiesColumnName, _options.NeighborSoftLabelsColumnName, _options.NeighborTextsColumnName, _options.NormalizeQueries);
    }

    internal static void ValidateStore(KnowledgeStore store, int k, string? textsColumn)
    {
        if (store.Count == 0) throw new ArgumentException("The knowledge store is empty: it needs at least one entry to retrieve from.", nameof(store));
        if (!store.HasEmbeddings)
            throw new ArgumentException("The knowledge store has no embeddings: call store.WithEmbeddings(encoder) with the student encoder before fitting the retriever.", nameof(store));
        if (k > store.Count) throw new ArgumentOutOfRangeException(nameof(k), $"K = {k} exceeds the knowledge store's {store.Count} entries.");
        if (textsColumn is not null && !store.HasTexts)
            throw new ArgumentException($"Column '{textsColumn}' asks for neighbour texts, but the knowledge store holds no texts (it was saved without them).", nameof(store));
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var matches = inputSchema.Where(c => c.Name == _options.InputColumnName).ToList();
        if (matches.Count == 0)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Input column '{_options.InputColumnName}' not found; expected a vector of Single (the query embedding).");
        var column = matches[^1];
        if (column.Kind != SchemaShape.Column.VectorKind.Vector || column.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Column '{_options.InputColumnName}' has type {column.ItemType} ({column.Kind}); expected a known-size vector of Single.");
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.NeighborIdsColumnName] = SchemaShapes.Vector(_options.NeighborIdsColumnName, NumberDataViewType.Int32);
        columns[_options.NeighborSimilaritiesColumnName] = SchemaShapes.Vector(_options.NeighborSimilaritiesColumnName, NumberDataViewType.Single);
        columns[_options.NeighborSoftLabelsColumnName] = SchemaShapes.Vector(_options.NeighborSoftLabelsColumnName, NumberDataViewType.Single);
        if (_options.NeighborTextsColumnName is { } texts) columns[texts] = SchemaShapes.Vector(texts, TextDataViewType.Instance);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Forwards progress on the reporting thread (<see cref="Progress{T}"/> would post it elsewhere).</summary>
    private sealed class SyncProgress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}

/// <summary>Input-column checks of the retriever (shared by Fit and the transformer's mapping).</summary>
internal static class RetrieverColumns
{
    /// <summary>The query column: a known-size vector of Single of the store's dimension, from the store's encoder when both fingerprints are known.</summary>
    public static DataViewSchema.Column RequireQuery(DataViewSchema schema, string name, KnowledgeStore store)
    {
        var column = RequireQuery(schema, name, store.Dimension);
        EncoderProvenance.Check(store.EncoderFingerprint, EncoderProvenance.Of(column), $"The '{EncoderProvenance.AnnotationName}' annotation of column '{name}'");
        return column;
    }

    private static DataViewSchema.Column RequireQuery(DataViewSchema schema, string name, int dimension)
    {
        var found = schema.GetColumnOrNull(name);
        if (found is not { } column) throw new ArgumentOutOfRangeException(nameof(schema), $"Input column '{name}' not found; expected a vector of Single of size {dimension} (the query embedding). Columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (column.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(schema), $"Column '{name}' has type {column.Type}; expected a vector of Single of size {dimension}.");
        if (vector.Size != dimension)
            throw new ArgumentOutOfRangeException(nameof(schema), vector.Size == 0
                ? $"Column '{name}' is a variable-size vector; expected a known-size vector of Single of size {dimension} (the knowledge store's embedding dimension)."
                : $"Column '{name}' has {vector.Size} values per row; expected {dimension} (the knowledge store's embedding dimension).");
        return column;
    }
}

/// <summary>
/// Retrieves the k nearest knowledge-store entries of each row's query embedding. Holds the store and its index;
/// both are saved in model.zip (store in its binary format, HNSW graph alongside). Thread-safe: each cursor or
/// prediction engine keeps its own buffers; the index searches allocation-free.
/// </summary>
public sealed class KnowledgeRetrieverTransformer : RowMappingTransformer, IDisposable
{
    internal static readonly ModelFormat Format = new("RKTRETRV", 0x00010001, 0x00010001, "RetriKTRetriever");
    private const string StoreStream = "KnowledgeStore.bin", GraphStream = "Hnsw.bin";

    private readonly IHostEnvironment _env;

    internal KnowledgeRetrieverTransformer(IHostEnvironment env, KnowledgeStore store, IVectorIndex index, string input, int k,
        string ids, string similarities, string softLabels, string? texts, bool normalize)
    {
        _env = env;
        Store = store;
        Index = index;
        InputColumnName = input;
        K = k;
        NeighborIdsColumnName = ids;
        NeighborSimilaritiesColumnName = similarities;
        NeighborSoftLabelsColumnName = softLabels;
        NeighborTextsColumnName = texts;
        NormalizeQueries = normalize;
    }

    /// <summary>The knowledge store searched.</summary>
    public KnowledgeStore Store { get; }
    /// <summary>The index over the store's embeddings (<see cref="ExactIndex"/> or <see cref="HnswIndex"/>); usable directly.</summary>
    public IVectorIndex Index { get; }
    /// <summary>Query embedding column.</summary>
    public string InputColumnName { get; }
    /// <summary>Neighbours per row.</summary>
    public int K { get; }
    /// <summary>Output column of neighbour ids.</summary>
    public string NeighborIdsColumnName { get; }
    /// <summary>Output column of neighbour similarities.</summary>
    public string NeighborSimilaritiesColumnName { get; }
    /// <summary>Output column of neighbour soft labels (k × labels).</summary>
    public string NeighborSoftLabelsColumnName { get; }
    /// <summary>Output column of neighbour texts, or null.</summary>
    public string? NeighborTextsColumnName { get; }
    /// <summary>Whether queries are L2-normalised before searching.</summary>
    public bool NormalizeQueries { get; }

    /// <summary>
    /// Searches one query embedding exactly as the output columns do (validation, optional normalisation), writing k
    /// ids and similarities. <paramref name="scratch"/> (length Dimension) receives the normalised query.
    /// </summary>
    public void Retrieve(ReadOnlySpan<float> query, Span<float> scratch, Span<int> ids, Span<float> similarities)
        => Retrieve(query, scratch, ids, similarities, -1);

    private void Retrieve(ReadOnlySpan<float> query, Span<float> scratch, Span<int> ids, Span<float> similarities, long row)
    {
        string where = row >= 0 ? $"Column '{InputColumnName}' row {row}" : "Query";
        if (query.Length != Store.Dimension) throw new ArgumentException($"{where}: {query.Length} values, expected {Store.Dimension} (the store's embedding dimension).");
        if (!SearchArguments.AllFinite(query)) throw new InvalidOperationException($"{where}: the query embedding holds NaN or infinity; expected finite values.");
        var q = scratch[..query.Length];
        query.CopyTo(q);
        if (NormalizeQueries)
        {
            double norm = VectorKernels.ScaleToUnitLength(q);
            if (!(norm > 0)) throw new InvalidOperationException($"{where}: the query embedding has norm {norm}; expected a non-zero vector.");
        }
        Index.Search(q, K, ids, similarities);
    }

    private protected override RowMapping CreateMapping(DataViewSchema inputSchema) => new Mapping(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        w.WriteString(InputColumnName);
        w.Writer.Write(K);
        w.WriteString(NeighborIdsColumnName);
        w.WriteString(NeighborSimilaritiesColumnName);
        w.WriteString(NeighborSoftLabelsColumnName);
        w.WriteStringOrNull(NeighborTextsColumnName);
        w.Writer.Write(NormalizeQueries);
        w.Writer.Write((int)(Index is HnswIndex ? RetrieverIndexKind.Hnsw : RetrieverIndexKind.Exact));
        w.WriteStream(StoreStream, s => { s.Flush(); Store.Write(s.BaseStream, includeTexts: NeighborTextsColumnName is not null); });
        if (Index is HnswIndex hnsw) w.WriteStream(GraphStream, s => { s.Flush(); hnsw.Write(s.BaseStream); });
    });

    internal static KnowledgeRetrieverTransformer Load(ModelReader r)
    {
        var input = r.ReadString();
        int k = r.Reader.ReadInt32();
        var ids = r.ReadString();
        var similarities = r.ReadString();
        var softLabels = r.ReadString();
        var texts = r.ReadStringOrNull();
        bool normalize = r.Reader.ReadBoolean();
        int kind = r.Reader.ReadInt32();
        if (kind is not ((int)RetrieverIndexKind.Exact or (int)RetrieverIndexKind.Hnsw)) throw new InvalidDataException($"Knowledge retriever in model.zip: unknown index kind {kind}.");
        KnowledgeStore? read = null;
        r.ReadStream(StoreStream, s => read = Wrap(StoreStream, () => KnowledgeStore.Read(s.BaseStream, StoreReadLimits.ForPart(s.BaseStream.Length))));
        var store = read ?? throw new InvalidDataException($"model.zip stream '{StoreStream}' of the knowledge retriever is empty.");
        if (k < 1 || k > store.Count) throw new InvalidDataException($"Knowledge retriever in model.zip: K = {k} is outside [1, {store.Count}] (the stored entries).");
        KnowledgeRetrieverEstimator.ValidateStore(store, k, texts);
        IVectorIndex index;
        if ((RetrieverIndexKind)kind == RetrieverIndexKind.Hnsw)
        {
            HnswIndex? graph = null;
            r.ReadStream(GraphStream, s => graph = Wrap(GraphStream, () => HnswIndex.Read(s.BaseStream, store.Embeddings, store.Dimension)));
            index = graph!;
        }
        else index = ExactIndex.For(store);
        return new KnowledgeRetrieverTransformer(r.Environment, store, index, input, k, ids, similarities, softLabels, texts, normalize);
    }

    private static T Wrap<T>(string stream, Func<T> read)
    {
        try { return read(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"model.zip stream '{stream}' of the knowledge retriever: {e.Message}", e); }
    }

    /// <summary>Disposes the index (an index given by the caller that holds native memory, such as the training assembly's <c>TorchExactIndex</c>, is freed).</summary>
    public void Dispose() => (Index as IDisposable)?.Dispose();

    private sealed class Mapping : RowMapping
    {
        private readonly KnowledgeRetrieverTransformer _parent;
        private readonly DataViewSchema.Column _input;

        public Mapping(KnowledgeRetrieverTransformer parent, DataViewSchema schema) : base(schema)
        {
            _parent = parent;
            _input = RetrieverColumns.RequireQuery(schema, parent.InputColumnName, parent.Store);
            int k = parent.K, labels = parent.Store.LabelCount;
            var outputs = new List<OutputColumn>
            {
                new(parent.NeighborIdsColumnName, new VectorDataViewType(NumberDataViewType.Int32, k)),
                new(parent.NeighborSimilaritiesColumnName, new VectorDataViewType(NumberDataViewType.Single, k)),
                new(parent.NeighborSoftLabelsColumnName, new VectorDataViewType(NumberDataViewType.Single, k * labels)),
            };
            if (parent.NeighborTextsColumnName is { } texts) outputs.Add(new(texts, new VectorDataViewType(TextDataViewType.Instance, k)));
            Outputs = outputs;
            Dependencies = [_input];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }
        public override IReadOnlyList<DataViewSchema.Column> Dependencies { get; }

        public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
        {
            var parent = _parent;
            var store = parent.Store;
            int k = parent.K, labels = store.LabelCount;
            var getQuery = input.GetGetter<VBuffer<float>>(_input);
            VBuffer<float> query = default;
            var dense = new float[store.Dimension];
            var scratch = new float[store.Dimension];
            var ids = new int[k];
            var similarities = new float[k];
            long cached = -1;

            void Compute()
            {
                if (cached == input.Position) return;
                getQuery(ref query);
                query.CopyTo(dense);
                parent.Retrieve(dense, scratch, ids, similarities, input.Position);
                cached = input.Position;
            }

            var getters = new Delegate?[Outputs.Count];
            getters[0] = (ValueGetter<VBuffer<int>>)((ref VBuffer<int> dst) =>
            {
                Compute();
                var editor = VBufferEditor.Create(ref dst, k);
                ids.CopyTo(editor.Values);
                dst = editor.Commit();
            });
            getters[1] = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
            {
                Compute();
                var editor = VBufferEditor.Create(ref dst, k);
                similarities.CopyTo(editor.Values);
                dst = editor.Commit();
            });
            getters[2] = (ValueGetter<VBuffer<float>>)((ref VBuffer<float> dst) =>
            {
                Compute();
                var editor = VBufferEditor.Create(ref dst, k * labels);
                for (int i = 0; i < k; i++) store.SoftLabel(ids[i]).CopyTo(editor.Values.Slice(i * labels, labels));
                dst = editor.Commit();
            });
            if (Outputs.Count > 3)
                getters[3] = (ValueGetter<VBuffer<ReadOnlyMemory<char>>>)((ref VBuffer<ReadOnlyMemory<char>> dst) =>
                {
                    Compute();
                    var editor = VBufferEditor.Create(ref dst, k);
                    for (int i = 0; i < k; i++) editor.Values[i] = (store.Entries[ids[i]].Text ?? "").AsMemory();
                    dst = editor.Commit();
                });
            return getters;
        }
    }
}
