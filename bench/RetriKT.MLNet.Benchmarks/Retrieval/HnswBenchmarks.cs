using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// HNSW single-query latency and recall@10 (vs exact, 200 fresh queries) at efSearch 16/32/64/128 and the calibrated default (0), over 50k random
/// 128-d unit vectors (the hardest case: no low intrinsic dimension), default M / efConstruction. The graph is built
/// once per run (in-process job) and its build time reported.
/// </summary>
[Config(typeof(RetrievalBenchConfig))]
public class HnswBenchmarks
{
    private const int N = 50_000, D = ExactSearchBenchmarks.D, K = 10, Queries = 200;
    private static HnswIndex? s_index;
    private static float[] s_queries = [];
    internal static readonly Dictionary<int, double> Recalls = [];
    internal static double BuildSeconds;
    internal static int CalibratedEfSearch;

    /// <summary>Beam width; 0 = the calibrated default.</summary>
    [Params(16, 32, 64, 128, 0)]
    public int EfSearch;

    private readonly int[] _ids = new int[K];
    private readonly float[] _scores = new float[K];
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        if (s_index is null)
        {
            var vectors = ExactSearchBenchmarks.RandomUnit(N, 1);
            var watch = Stopwatch.StartNew();
            s_index = HnswIndex.Build(vectors, D);
            BuildSeconds = watch.Elapsed.TotalSeconds;
            CalibratedEfSearch = s_index.EfSearch;
            s_queries = ExactSearchBenchmarks.RandomUnit(Queries, 3);
            using var exact = new ExactIndex(vectors, D, new ExactIndexOptions { Backend = ExactSearchBackend.Managed });
            foreach (var ef in new[] { 16, 32, 64, 128, s_index.EfSearch })
                Recalls[ef] = s_index.Recall(exact, s_queries, Queries, K, ef);
            Console.WriteLine($"// HNSW {N}×{D}: build {BuildSeconds:F1} s, calibrated efSearch {s_index.EfSearch} (build-time recall {s_index.MeasuredRecall:F3}, fresh-query recall {Recalls[s_index.EfSearch]:F3})");
        }
    }

    [Benchmark]
    public int Search()
    {
        int q = _next++ % Queries;
        s_index!.Search(s_queries.AsSpan(q * D, D), K, _ids, _scores, EfSearch == 0 ? s_index.EfSearch : EfSearch);
        return _ids[0];
    }
}
