using System.Buffers.Binary;
using System.Text;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Knowledge;

/// <summary>Build and search parameters of <see cref="HnswIndex"/>.</summary>
public sealed record HnswOptions
{
    /// <summary>Links per node on the upper layers (layer 0 keeps up to 2·M). More links: better recall, bigger graph,
    /// slower build. Default 32 (16 is enough for low-intrinsic-dimension data; 32 keeps the beam needed on
    /// hard, near-uniform 128-d embeddings about 2× smaller).</summary>
    public int M { get; init; } = 32;
    /// <summary>Candidate list size while building; larger builds a better graph, more slowly. Default 100 (200 gave
    /// no measurable recall gain at M = 32 on 50k × 128 and builds 1.5× slower).</summary>
    public int EfConstruction { get; init; } = 100;
    /// <summary>
    /// Candidate list size while searching (at least k is used); the recall/latency knob. Default 0 = calibrate at build
    /// time: the smallest beam whose recall@<see cref="CalibrationK"/> against exact search reaches
    /// <see cref="TargetRecall"/> on <see cref="CalibrationQueries"/> stored vectors searched leave-one-out (each one's
    /// own node is closed to the search and left out of both answers, as if its text were a new query). The calibrated
    /// value and its recall are kept with the graph; a beam given here has its recall measured the same way
    /// (<see cref="RetrieverIndexKind.Auto"/> compares it with its target).
    /// </summary>
    public int EfSearch { get; init; }
    /// <summary>Recall the calibration aims for when <see cref="EfSearch"/> is 0. Default 0.97: a margin over the usual
    /// 0.95 goal, for queries unlike the stored vectors (on real SST-2 sentences the leave-one-out recall was the lower
    /// one at every beam: docs/SEARCH.md).</summary>
    public double TargetRecall { get; init; } = 0.97;
    /// <summary>Queries used by the calibration (and the recall report). Default 200.</summary>
    public int CalibrationQueries { get; init; } = 200;
    /// <summary>Neighbour count the calibration measures recall at. Default 10.</summary>
    public int CalibrationK { get; init; } = 10;
    /// <summary>Seed of the level assignment; the build is single-threaded and deterministic given the seed. Default 42.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Widest beam, building or searching, that the options accept and a graph file may state.</summary>
    internal const int MaxBeam = 10_000;

    internal void Validate()
    {
        if (M < 2 || M > 128) throw new ArgumentOutOfRangeException(nameof(M), $"HNSW M must be in [2, 128], found {M}.");
        if (EfConstruction < 1 || EfConstruction > MaxBeam) throw new ArgumentOutOfRangeException(nameof(EfConstruction), $"HNSW EfConstruction must be in [1, {MaxBeam}], found {EfConstruction}.");
        if (EfSearch < 0 || EfSearch > MaxBeam) throw new ArgumentOutOfRangeException(nameof(EfSearch), $"HNSW EfSearch must be 0 (calibrate) or in [1, {MaxBeam}], found {EfSearch}.");
        if (!(TargetRecall > 0 && TargetRecall <= 1)) throw new ArgumentOutOfRangeException(nameof(TargetRecall), $"HNSW TargetRecall must be in (0, 1], found {TargetRecall}.");
        if (CalibrationQueries < 1) throw new ArgumentOutOfRangeException(nameof(CalibrationQueries), $"HNSW CalibrationQueries must be >= 1, found {CalibrationQueries}.");
        if (CalibrationK < 1) throw new ArgumentOutOfRangeException(nameof(CalibrationK), $"HNSW CalibrationK must be >= 1, found {CalibrationK}.");
    }
}

/// <summary>
/// Hierarchical Navigable Small World graph (Malkov &amp; Yashunin, 2016) for approximate maximum inner-product search
/// over unit vectors. Each vector gets a random level (geometric, base 1/ln M); each layer is a proximity graph whose
/// links are chosen with the paper's neighbour-diversity heuristic (Algorithm 4). Search descends greedily from the
/// top layer and runs a best-first beam of width efSearch on layer 0.
/// </summary>
/// <remarks>
/// The graph references the vectors it was built over (not copied, must not change); <see cref="Write"/> stores only
/// the graph, so model.zip holds the vectors once (in the knowledge store). The build is single-threaded and
/// deterministic given <see cref="HnswOptions.Seed"/>. Search is thread-safe and allocation-free (per-thread scratch).
/// </remarks>
public sealed class HnswIndex : IVectorIndex
{
    private const string Magic = "RKTHNSW1";
    /// <summary>Graph format version this library writes (2 adds the calibration's k and target recall; 1 is still read).</summary>
    public const uint FormatVersion = 2;
    private const int MaxLevelCap = 32;

    private readonly ReadOnlyMemory<float> _vectors;
    private readonly byte[] _levels;
    private readonly int[] _links0;      // Count × (1 + M0): [count, ids...] per node, layer 0
    private readonly int[]?[] _upper;    // per node with level > 0: level × (1 + M) for layers 1..level
    private readonly int _m0;
    private int _entryPoint;
    private int _maxLevel;

    [ThreadStatic] private static Scratch? t_scratch;

    private HnswIndex(ReadOnlyMemory<float> vectors, int dimension, HnswOptions options)
    {
        options.Validate();
        _vectors = vectors;
        Dimension = dimension;
        Count = vectors.Length / dimension;
        Options = options;
        _m0 = 2 * options.M;
        _levels = new byte[Count];
        _links0 = new int[(long)Count * (1 + _m0) <= int.MaxValue ? Count * (1 + _m0) : throw new ArgumentException($"{Count} vectors with M = {options.M} exceed the graph's 2^31 link slots.")];
        _upper = new int[]?[Count];
        _entryPoint = -1;
        EfSearch = options.EfSearch;
    }

    /// <inheritdoc/>
    public int Count { get; }
    /// <inheritdoc/>
    public int Dimension { get; }
    /// <summary>Build and default search parameters.</summary>
    public HnswOptions Options { get; private set; }
    /// <summary>Beam width used when a search does not name one (<see cref="HnswOptions.EfSearch"/> or the calibrated value).</summary>
    public int EfSearch { get; private set; }
    /// <summary>Recall@<see cref="HnswOptions.CalibrationK"/> against exact search measured at <see cref="EfSearch"/>
    /// when the index was built, the calibrated beam or the one the options gave.</summary>
    public double MeasuredRecall { get; private set; } = double.NaN;
    /// <summary>Highest layer of the graph.</summary>
    public int MaxLevel => _maxLevel;
    /// <summary>
    /// Whether searches at <see cref="EfSearch"/> scan the vectors exactly instead of walking the graph: the beam is at
    /// least the store's size, so a walk would evaluate every node it can reach (more similarities than the scan, in
    /// random order) and still miss the nodes it cannot reach. A calibration ends here when no narrower beam reaches its
    /// target (the recall it reports is then the scan's, 1). A search given a beam that wide scans too.
    /// </summary>
    public bool SearchesExactly => EfSearch >= Count;

    // ------------------------------------------------------------------ build

    /// <summary>Builds the graph over the embeddings of <paramref name="store"/> (ids = entry indices).</summary>
    public static HnswIndex Build(KnowledgeStore store, HnswOptions? options = null, IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (!store.HasEmbeddings) throw new ArgumentException("The knowledge store has no embeddings; call WithEmbeddings with the student encoder first.", nameof(store));
        return Build(store.Embeddings, store.Dimension, options, progress, cancellation);
    }

    /// <summary>
    /// Builds the graph over <paramref name="vectors"/> (row-major <c>count × dimension</c>, unit length, finite).
    /// <paramref name="progress"/> receives the number of inserted vectors every 1,024 insertions.
    /// </summary>
    public static HnswIndex Build(ReadOnlyMemory<float> vectors, int dimension, HnswOptions? options = null,
        IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        SearchArguments.CheckVectors(vectors, dimension);
        var index = new HnswIndex(vectors, dimension, options ?? new HnswOptions());
        var random = new Random(index.Options.Seed);
        double levelScale = 1 / Math.Log(index.Options.M);
        for (int i = 0; i < index.Count; i++)
        {
            int level = Math.Min(MaxLevelCap, (int)(-Math.Log(1 - random.NextDouble()) * levelScale));
            index.Insert(i, level);
            if ((i & 1023) == 1023)
            {
                cancellation.ThrowIfCancellationRequested();
                progress?.Report(i + 1);
            }
        }
        progress?.Report(index.Count);
        // The recall measurement can take as long as the insertions (200 searches per beam tried): it honours the token too.
        if (index.Options.EfSearch == 0) index.Calibrate(cancellation);
        else index.MeasureRecall(cancellation);
        return index;
    }

    private ReadOnlySpan<float> Vector(int id) => _vectors.Span.Slice(id * Dimension, Dimension);

    private float Similarity(ReadOnlySpan<float> query, int id) => VectorKernels.Dot(query, Vector(id));

    private Span<int> Links(int node, int layer)
        => layer == 0
            ? _links0.AsSpan(node * (1 + _m0), 1 + _m0)
            : _upper[node].AsSpan((layer - 1) * (1 + Options.M), 1 + Options.M);

    private void Insert(int node, int level)
    {
        _levels[node] = (byte)level;
        if (level > 0) _upper[node] = new int[level * (1 + Options.M)];
        if (_entryPoint < 0)
        {
            _entryPoint = node;
            _maxLevel = level;
            return;
        }
        var query = Vector(node);
        var scratch = Scratch.For(Count);
        int entry = _entryPoint;
        float entryScore = Similarity(query, entry);
        for (int layer = _maxLevel; layer > level; layer--) (entry, entryScore) = Greedy(query, entry, entryScore, layer);
        for (int layer = Math.Min(level, _maxLevel); layer >= 0; layer--)
        {
            SearchLayer(query, entry, entryScore, Options.EfConstruction, layer, scratch);
            // Drain the worst-on-top result heap into best-first order.
            var found = scratch.Found;
            found.Clear();
            while (scratch.Results.Count > 0) { found.Add((scratch.Results.TopScore, scratch.Results.TopId)); scratch.Results.Pop(); }
            found.Reverse();
            (entryScore, entry) = found[0];
            var chosen = scratch.Chosen;
            SelectNeighbours(found, Options.M, chosen);
            var links = Links(node, layer);
            links[0] = chosen.Count;
            for (int i = 0; i < chosen.Count; i++) links[1 + i] = chosen[i].Id;
            int cap = layer == 0 ? _m0 : Options.M;
            foreach (var (score, neighbour) in chosen) Connect(neighbour, node, score, layer, cap, scratch);
        }
        if (level > _maxLevel)
        {
            _maxLevel = level;
            _entryPoint = node;
        }
    }

    /// <summary>Adds a back link <paramref name="neighbour"/> → <paramref name="node"/>, pruning with the heuristic when full.</summary>
    private void Connect(int neighbour, int node, float score, int layer, int cap, Scratch scratch)
    {
        var links = Links(neighbour, layer);
        int n = links[0];
        if (n < cap)
        {
            links[1 + n] = node;
            links[0] = n + 1;
            return;
        }
        var baseVector = Vector(neighbour);
        var candidates = scratch.Pruning;
        candidates.Clear();
        candidates.Add((score, node));
        for (int i = 0; i < n; i++) candidates.Add((Similarity(baseVector, links[1 + i]), links[1 + i]));
        candidates.Sort(static (a, b) => TopK.Better(a.Score, a.Id, b.Score, b.Id) ? -1 : TopK.Better(b.Score, b.Id, a.Score, a.Id) ? 1 : 0);
        var kept = scratch.Chosen2;
        SelectNeighbours(candidates, cap, kept);
        links[0] = kept.Count;
        for (int i = 0; i < kept.Count; i++) links[1 + i] = kept[i].Id;
    }

    /// <summary>
    /// Neighbour-diversity heuristic: walking candidates best-first, keep one only if it is closer to the base than to
    /// every neighbour kept so far, so links spread over directions instead of clustering.
    /// </summary>
    private void SelectNeighbours(List<(float Score, int Id)> bestFirst, int m, List<(float Score, int Id)> chosen)
    {
        chosen.Clear();
        foreach (var candidate in bestFirst)
        {
            if (chosen.Count >= m) break;
            var vector = Vector(candidate.Id);
            bool diverse = true;
            foreach (var kept in chosen)
                if (VectorKernels.Dot(vector, Vector(kept.Id)) > candidate.Score) { diverse = false; break; }
            if (diverse) chosen.Add(candidate);
        }
    }

    // ------------------------------------------------------------------ search

    /// <summary>Picks the smallest beam that reaches the target recall (see <see cref="HnswOptions.EfSearch"/>).</summary>
    private void Calibrate(CancellationToken cancellation)
    {
        if (Count <= 1) { EfSearch = 1; MeasuredRecall = 1; return; }
        var recallAt = RecallMeter(cancellation);
        int ef = 16;
        while (true)
        {
            double recall = recallAt(ef);
            if (recall >= Options.TargetRecall || ef >= Math.Min(Count, HnswOptions.MaxBeam))
            {
                EfSearch = ef;
                MeasuredRecall = recall;
                return;
            }
            // Never past the widest beam a graph file may state: 8,563 + 25 % gave 10,703, a graph that wrote and did not read.
            ef = Math.Min(ef < 64 ? ef * 2 : ef + ef / 4, HnswOptions.MaxBeam);
        }
    }

    /// <summary>
    /// The recall of a beam the options gave, measured as the calibration measures it: Auto compares it with its target,
    /// and with NaN (unmeasured) it fell back to exact search every time, after building the graph for nothing.
    /// </summary>
    private void MeasureRecall(CancellationToken cancellation) => MeasuredRecall = Count <= 1 ? 1 : RecallMeter(cancellation)(EfSearch);

    /// <summary>
    /// Recall@<see cref="HnswOptions.CalibrationK"/> against exact search as a function of the beam, on
    /// <see cref="HnswOptions.CalibrationQueries"/> stored vectors searched leave-one-out (see <see cref="HnswOptions.EfSearch"/>);
    /// <paramref name="cancellation"/> is checked before each query. Queries made by moving stored vectors half-way to a
    /// random direction lie off the data, where the graph has no links: on 30,000 SST-2 sentences they asked for a beam
    /// of 737, slower than an exact scan, where the dev sentences reach recall@16 0.9996 at 100.
    /// </summary>
    private Func<int, double> RecallMeter(CancellationToken cancellation)
    {
        int k = Math.Min(Options.CalibrationK, Count - 1), queries = Math.Min(Options.CalibrationQueries, Count - 1);
        // Leave-one-out: each query is a stored vector, searched with its own node closed to the walk and dropped from
        // both answers. Stored vectors are what served queries look like (texts encoded by the same encoder); closing the
        // node takes away the shortcut its own back links would give. The entry point cannot be closed: it is not drawn.
        var random = SeedMixer.Random(Options.Seed, "hnsw-calibration");
        var drawn = new HashSet<int> { _entryPoint };
        var picked = new int[queries];
        var batch = new float[queries * Dimension];
        for (int q = 0; q < queries; q++)
        {
            int id;
            do id = random.Next(Count); while (!drawn.Add(id));
            picked[q] = id;
            Vector(id).CopyTo(batch.AsSpan(q * Dimension, Dimension));
        }
        // Ask for k + 1 and drop the query's own entry (wherever a tie puts it) from the exact answer.
        var truth = new int[queries * (k + 1)];
        var scores = new float[queries * (k + 1)];
        new ExactIndex(_vectors, Dimension).Search(batch, queries, k + 1, truth, scores);
        var found = new int[k];
        var foundScores = new float[k];
        return ef =>
        {
            long hits = 0;
            for (int q = 0; q < queries; q++)
            {
                cancellation.ThrowIfCancellationRequested();
                int reached = SearchOne(batch.AsSpan(q * Dimension, Dimension), k, found, foundScores, Math.Max(ef, k), closed: picked[q]);
                found.AsSpan(reached).Fill(-1); // slots the search did not reach are misses, not the last query's hits
                var expected = WithoutSelf(truth.AsSpan(q * (k + 1), k + 1), picked[q], k);
                foreach (var id in found) if (expected.Contains(id)) hits++;
            }
            return (double)hits / ((long)queries * k);
        };
    }

    private static ReadOnlySpan<int> WithoutSelf(Span<int> ids, int self, int k)
    {
        int at = ids.IndexOf(self);
        if (at >= 0 && at < k) ids[(at + 1)..].CopyTo(ids[at..]);
        return ids[..k];
    }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores)
        => Search(query, k, ids, scores, EfSearch);

    /// <summary>Single-query search with an explicit beam width <paramref name="efSearch"/> (at least k is used).</summary>
    public void Search(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores, int efSearch)
    {
        SearchArguments.Check(this, query, 1, k, ids.Length, scores.Length);
        if (efSearch < 1) throw new ArgumentOutOfRangeException(nameof(efSearch), $"efSearch must be >= 1, found {efSearch}.");
        ExactWhereUnreached(SearchOne(query, k, ids, scores, Math.Max(efSearch, k)), query, k, ids, scores, 0);
    }

    /// <inheritdoc/>
    public void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores)
        => Search(queries, count, k, ids, scores, EfSearch);

    /// <summary>Batched search with an explicit beam width (queries run one after another on the calling thread).</summary>
    public void Search(ReadOnlySpan<float> queries, int count, int k, Span<int> ids, Span<float> scores, int efSearch)
    {
        SearchArguments.Check(this, queries, count, k, ids.Length, scores.Length);
        if (efSearch < 1) throw new ArgumentOutOfRangeException(nameof(efSearch), $"efSearch must be >= 1, found {efSearch}.");
        for (int q = 0; q < count; q++)
        {
            var query = queries.Slice(q * Dimension, Dimension);
            var queryIds = ids.Slice(q * k, k);
            var queryScores = scores.Slice(q * k, k);
            ExactWhereUnreached(SearchOne(query, k, queryIds, queryScores, Math.Max(efSearch, k)), query, k, queryIds, queryScores, q);
        }
    }

    /// <summary>
    /// A query whose beam reached fewer than k entries is answered by an exact scan of the indexed vectors, instead of
    /// returning the unfilled slots as the caller left them (or failing a prediction): the part of the graph reachable
    /// from the entry point is smaller than k. Many identical vectors do this (more copies than a node's 2·M links: their
    /// link lists fill with one another and later nodes lose their back links). The scan still fails where inner products
    /// overflow, as the exact index does.
    /// </summary>
    private void ExactWhereUnreached(int reached, ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores, int queryIndex)
    {
        if (reached < k) SearchArguments.RequireFound(ExactIndex.Scan(_vectors.Span, Count, Dimension, query, k, ids, scores), k, queryIndex);
    }

    /// <summary>
    /// One query's search; returns how many results it found (fewer than k only when the beam reached fewer entries). A
    /// beam of the store's size or wider scans exactly (<see cref="SearchesExactly"/>).
    /// </summary>
    private int SearchOne(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores, int ef, int closed = -1)
    {
        if (ef >= Count) return ScanExcept(query, k, ids, scores, closed);
        var scratch = Scratch.For(Count);
        int entry = _entryPoint;
        float entryScore = Similarity(query, entry);
        for (int layer = _maxLevel; layer > 0; layer--) (entry, entryScore) = Greedy(query, entry, entryScore, layer, closed);
        SearchLayer(query, entry, entryScore, ef, 0, scratch, closed);
        var results = scratch.Results;
        while (results.Count > k) results.Pop();
        var top = new TopK(scores, ids, k);
        for (int i = 0; i < results.Count; i++) { var (s, id) = results[i]; top.Offer(s, id); }
        return top.SortDescending();
    }

    /// <summary>The exact top-k, without the node <paramref name="closed"/> (the calibration's leave-one-out query).</summary>
    private int ScanExcept(ReadOnlySpan<float> query, int k, Span<int> ids, Span<float> scores, int closed)
    {
        if (closed < 0) return ExactIndex.Scan(_vectors.Span, Count, Dimension, query, k, ids, scores);
        var (withClosedIds, withClosedScores) = (new int[k + 1], new float[k + 1]); // calibration only: k + 1 <= Count
        int found = ExactIndex.Scan(_vectors.Span, Count, Dimension, query, k + 1, withClosedIds, withClosedScores);
        int n = 0;
        for (int i = 0; i < found && n < k; i++)
            if (withClosedIds[i] != closed) { ids[n] = withClosedIds[i]; scores[n++] = withClosedScores[i]; }
        return n;
    }

    /// <summary>Greedy walk on an upper layer: move to the best neighbour (never to <paramref name="closed"/>) until none improves.</summary>
    private (int, float) Greedy(ReadOnlySpan<float> query, int entry, float entryScore, int layer, int closed = -1)
    {
        bool moved = true;
        while (moved)
        {
            moved = false;
            var links = Links(entry, layer);
            for (int i = 1; i <= links[0]; i++)
            {
                if (links[i] == closed) continue;
                float s = Similarity(query, links[i]);
                if (TopK.Better(s, links[i], entryScore, entry)) { entry = links[i]; entryScore = s; moved = true; }
            }
        }
        return (entry, entryScore);
    }

    /// <summary>
    /// Best-first beam search of width <paramref name="ef"/> on one layer; leaves the results in scratch.Results (worst on
    /// top). The node <paramref name="closed"/> (the calibration's leave-one-out query) is neither visited nor returned.
    /// </summary>
    private void SearchLayer(ReadOnlySpan<float> query, int entry, float entryScore, int ef, int layer, Scratch scratch, int closed = -1)
    {
        var candidates = scratch.Candidates;
        var results = scratch.Results;
        candidates.Clear();
        results.Clear();
        int stamp = scratch.NextStamp();
        var visited = scratch.Visited;
        visited[entry] = stamp;
        if (closed >= 0) visited[closed] = stamp;
        candidates.Push(entryScore, entry);
        results.Push(entryScore, entry);
        while (candidates.Count > 0)
        {
            float score = candidates.TopScore;
            int node = candidates.TopId;
            if (results.Count >= ef && score < results.TopScore) break;
            candidates.Pop();
            var links = Links(node, layer);
            int n = links[0];
            for (int i = 1; i <= n; i++)
            {
                int neighbour = links[i];
                if (visited[neighbour] == stamp) continue;
                visited[neighbour] = stamp;
                float s = Similarity(query, neighbour);
                if (results.Count < ef || s > results.TopScore)
                {
                    candidates.Push(s, neighbour);
                    results.Push(s, neighbour);
                    if (results.Count > ef) results.Pop();
                }
            }
        }
    }

    /// <summary>
    /// Recall@k of this index against <paramref name="reference"/> (normally an <see cref="ExactIndex"/> over the same
    /// vectors): the mean fraction of the reference's k neighbours this index also returns, over <paramref name="count"/>
    /// queries.
    /// </summary>
    public double Recall(IVectorIndex reference, ReadOnlySpan<float> queries, int count, int k, int? efSearch = null)
    {
        ArgumentNullException.ThrowIfNull(reference);
        if (count <= 0) throw new ArgumentOutOfRangeException(nameof(count), $"Recall needs at least one query, found {count}.");
        var expected = new int[count * k];
        var found = new int[count * k];
        var scores = new float[count * k];
        reference.Search(queries, count, k, expected, scores);
        Search(queries, count, k, found, scores, efSearch ?? EfSearch);
        long hits = 0;
        for (int q = 0; q < count; q++)
        {
            var truth = expected.AsSpan(q * k, k);
            foreach (var id in found.AsSpan(q * k, k)) if (truth.Contains(id)) hits++;
        }
        return (double)hits / ((long)count * k);
    }

    /// <summary>Per-thread search state: visit stamps sized to the largest index seen, heaps, lists.</summary>
    private sealed class Scratch
    {
        public int[] Visited = [];
        private int _stamp;
        public readonly ScoredHeap Candidates = new(bestOnTop: true);
        public readonly ScoredHeap Results = new(bestOnTop: false);
        public readonly List<(float Score, int Id)> Found = [], Chosen = [], Chosen2 = [], Pruning = [];

        public static Scratch For(int count)
        {
            var s = t_scratch ??= new Scratch();
            if (s.Visited.Length < count) { s.Visited = new int[count]; s._stamp = 0; }
            return s;
        }

        public int NextStamp()
        {
            if (++_stamp == int.MaxValue) { Array.Clear(Visited); _stamp = 1; }
            return _stamp;
        }
    }

    // ------------------------------------------------------------------ persistence

    /// <summary>
    /// Writes the graph (not the vectors): magic <c>RKTHNSW1</c>, u32 version, i32 count, dimension, M, efConstruction,
    /// efSearch (effective), seed, entry point, max level, f64 measured recall; per node its level (u8); per node and layer (0 first, then 1..level) an
    /// i32 link count and the linked ids; (version 2) i32 calibration k and f64 target recall, which <see cref="MeasuredRecall"/>
    /// refers to; last a u64 FNV-1a checksum of everything before it.
    /// </summary>
    public void Write(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var hashing = new ChecksumStream(stream, writing: true);
        using (var w = new BinaryWriter(hashing, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Encoding.ASCII.GetBytes(Magic));
            w.Write(FormatVersion);
            foreach (var value in new[] { Count, Dimension, Options.M, Options.EfConstruction, EfSearch, Options.Seed, _entryPoint, _maxLevel })
                w.Write(value);
            w.Write(MeasuredRecall);
            w.Write(_levels);
            for (int node = 0; node < Count; node++)
                for (int layer = 0; layer <= _levels[node]; layer++)
                {
                    var links = Links(node, layer);
                    for (int i = 0; i <= links[0]; i++) w.Write(links[i]);
                }
            w.Write(Options.CalibrationK);
            w.Write(Options.TargetRecall);
        }
        Span<byte> tail = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(tail, hashing.Hash);
        stream.Write(tail);
    }

    /// <summary>
    /// Reads a graph written by <see cref="Write"/> over the same <paramref name="vectors"/>. A truncated, tampered or
    /// mismatched stream throws <see cref="InvalidDataException"/> naming the field; nothing is allocated beyond what
    /// the vector count (known from the vectors, not from the stream) implies.
    /// </summary>
    public static HnswIndex Read(Stream stream, ReadOnlyMemory<float> vectors, int dimension)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (dimension <= 0 || vectors.Length % dimension != 0) throw new ArgumentException($"Vectors ({vectors.Length} values) do not form rows of dimension {dimension}.", nameof(vectors));
        int expectedCount = vectors.Length / dimension;
        var hashing = new ChecksumStream(stream, writing: false);
        using var r = new BinaryReader(hashing, Encoding.UTF8, leaveOpen: true);
        try
        {
            var magic = r.ReadBytes(8);
            Check(magic.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(Magic)), $"not an HNSW graph (magic '{KnowledgeStore.PrintableMagic(magic)}', expected '{Magic}')");
            uint version = r.ReadUInt32();
            Check(version is 1 or FormatVersion, $"HNSW graph format version {version} is not supported (this library reads 1 and {FormatVersion})");
            int count = r.ReadInt32(), dim = r.ReadInt32(), m = r.ReadInt32(), efC = r.ReadInt32(), efS = r.ReadInt32(), seed = r.ReadInt32();
            int entry = r.ReadInt32(), maxLevel = r.ReadInt32();
            double recall = r.ReadDouble();
            Check(count == expectedCount, $"graph has {count} nodes, expected {expectedCount} (one per stored vector)");
            Check(dim == dimension, $"graph was built for dimension {dim}, expected {dimension}");
            Check(m is >= 2 and <= 128 && efC is >= 1 and <= HnswOptions.MaxBeam && efS is >= 1 and <= HnswOptions.MaxBeam, $"parameters out of range (M {m}, efConstruction {efC}, efSearch {efS})");
            Check(count == 0 ? entry == -1 : (uint)entry < (uint)count, $"entry point {entry} is outside [0, {count})");
            Check(maxLevel is >= 0 and <= MaxLevelCap, $"max level {maxLevel} is outside [0, {MaxLevelCap}]");
            var index = new HnswIndex(vectors, dimension, new HnswOptions { M = m, EfConstruction = efC, EfSearch = efS, Seed = seed })
            {
                _entryPoint = entry,
                _maxLevel = maxLevel,
                MeasuredRecall = recall,
            };
            r.BaseStream.ReadExactly(index._levels);
            for (int node = 0; node < count; node++)
            {
                int level = index._levels[node];
                Check(level <= maxLevel, $"node {node} has level {level} above the max level {maxLevel}");
                if (level > 0) index._upper[node] = new int[level * (1 + m)];
                for (int layer = 0; layer <= level; layer++)
                {
                    var links = index.Links(node, layer);
                    int n = r.ReadInt32();
                    Check(n >= 0 && n < links.Length, $"node {node} layer {layer}: link count {n} is outside [0, {links.Length - 1}]");
                    links[0] = n;
                    for (int i = 1; i <= n; i++)
                    {
                        int id = r.ReadInt32();
                        Check((uint)id < (uint)count && id != node, $"node {node} layer {layer}: link {id} is outside [0, {count}) or a self link");
                        // A search follows the link on this layer: its target must have links there.
                        Check(index._levels[id] >= layer, $"node {node} layer {layer}: link {id} is to a node of level {index._levels[id]}, not on layer {layer}");
                        links[i] = id;
                    }
                }
            }
            Check(count == 0 || index._levels[entry] == maxLevel, $"entry point {entry} is not on the top layer {maxLevel}");
            if (version >= 2)
            {
                // What MeasuredRecall was measured at (a version 1 graph did not say: the defaults stand in).
                int calibrationK = r.ReadInt32();
                double targetRecall = r.ReadDouble();
                Check(calibrationK >= 1 && targetRecall > 0 && targetRecall <= 1, $"calibration k {calibrationK} or target recall {targetRecall} out of range");
                index.Options = index.Options with { CalibrationK = calibrationK, TargetRecall = targetRecall };
            }
            ulong computed = hashing.Hash;
            Span<byte> tail = stackalloc byte[8];
            Check(stream.ReadAtLeast(tail, 8, throwOnEndOfStream: false) == 8, "the checksum is missing: the graph is truncated");
            ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(tail);
            Check(stored == computed, $"checksum mismatch (stored {stored:X16}, computed {computed:X16}): the graph is corrupt or was modified");
            return index;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("HNSW graph: unexpected end of stream: the graph is truncated.", e);
        }
    }

    private static void Check(bool condition, string message)
    {
        if (!condition) throw new InvalidDataException("HNSW graph: " + message + ".");
    }
}
