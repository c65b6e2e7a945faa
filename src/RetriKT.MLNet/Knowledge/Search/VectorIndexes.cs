namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// The one place the search structure over a store's embeddings is chosen, for the student's retrieval and the
/// <see cref="KnowledgeRetrieverEstimator"/>: exact by default, HNSW from a store size where it was measured faster than
/// exact search at recall@16 ≥ 0.99 (docs/SEARCH.md has the command and the table). The size is counted in floats
/// (entries × dimension, <see cref="HnswMinimumFloats"/>), because an exact query reads every float once while HNSW
/// reads a few thousand vectors whatever the store's size, and pays more per vector when vectors are short: at
/// dimension 384 HNSW broke even at 16,384 entries and was 9.8× faster at 32,768; at dimension 48 it was still
/// slower at 131,072 (0.8×) and 1.12× faster at 262,144: both at 12 Mi floats.
/// </summary>
/// <remarks>
/// The automatic HNSW is calibrated at build for <see cref="AutoTargetRecall"/> at k = <see cref="AutoRecallK"/>; when
/// the calibration cannot reach it, exact search is used instead, so <see cref="RetrieverIndexKind.Auto"/> never
/// trades more recall than that. The graph is built when the index is made (for a loaded student: at load), single-
/// threaded and deterministic given the seed.
/// </remarks>
public static class VectorIndexes
{
    /// <summary>
    /// Store size, in floats (entries × dimension), from which <see cref="RetrieverIndexKind.Auto"/> builds HNSW (below
    /// it: exact search): 12 Mi = 32,768 entries at dimension 384, 196,608 at 64, 262,144 at 48 (the student's default width).
    /// </summary>
    public const long HnswMinimumFloats = 12L << 20;
    /// <summary>Recall@<see cref="AutoRecallK"/> against exact search the automatic HNSW must reach at build.</summary>
    public const double AutoTargetRecall = 0.99;
    /// <summary>The neighbour count the automatic HNSW's recall is calibrated at (the student's default k).</summary>
    public const int AutoRecallK = 16;

    /// <summary>
    /// The beam the automatic HNSW calibrates for: recall@16 0.995 on the calibration's leave-one-out queries, a margin
    /// over <see cref="AutoTargetRecall"/> for queries unlike the stored vectors (as <see cref="HnswOptions.TargetRecall"/>'s
    /// 0.97 is for 0.95).
    /// </summary>
    public const double AutoCalibrationRecall = 0.995;

    /// <summary>HNSW options of the automatic choice: the defaults, calibrated for recall@16 of <see cref="AutoCalibrationRecall"/>.</summary>
    public static HnswOptions AutoHnswOptions(int seed = 42) => new() { TargetRecall = AutoCalibrationRecall, CalibrationK = AutoRecallK, Seed = seed };

    /// <summary>Whether <see cref="RetrieverIndexKind.Auto"/> tries HNSW for <paramref name="count"/> entries of <paramref name="dimension"/> floats.</summary>
    public static bool PrefersHnsw(int count, int dimension) => (long)count * dimension >= HnswMinimumFloats;

    /// <summary>The fewest entries of <paramref name="dimension"/> floats for which <see cref="RetrieverIndexKind.Auto"/> tries HNSW.</summary>
    public static int HnswMinimumCount(int dimension) => (int)Math.Min(int.MaxValue, (HnswMinimumFloats + dimension - 1) / Math.Max(1, dimension));

    /// <summary>
    /// The index over <paramref name="store"/>'s embeddings (held once: both indices read the store's memory).
    /// <paramref name="kind"/> Exact or Hnsw forces that structure (<paramref name="hnsw"/>: its options, default
    /// <see cref="HnswOptions"/>'s); Auto follows <see cref="PrefersHnsw"/> with <see cref="AutoHnswOptions"/> (or
    /// <paramref name="hnsw"/>) and falls back to exact when the graph's measured recall is below <see cref="AutoTargetRecall"/>.
    /// </summary>
    public static IVectorIndex For(KnowledgeStore store, RetrieverIndexKind kind = RetrieverIndexKind.Auto, HnswOptions? hnsw = null,
        IProgress<int>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        switch (kind)
        {
            case RetrieverIndexKind.Exact:
                return ExactIndex.For(store);
            case RetrieverIndexKind.Hnsw:
                return HnswIndex.Build(store, hnsw, progress, cancellation);
            case RetrieverIndexKind.Auto:
                if (!PrefersHnsw(store.Count, store.Dimension)) return ExactIndex.For(store);
                var graph = HnswIndex.Build(store, hnsw ?? AutoHnswOptions(), progress, cancellation);
                return graph.MeasuredRecall >= AutoTargetRecall ? graph : ExactIndex.For(store);
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), $"Unknown index kind {kind}; expected Exact, Hnsw or Auto.");
        }
    }
}
