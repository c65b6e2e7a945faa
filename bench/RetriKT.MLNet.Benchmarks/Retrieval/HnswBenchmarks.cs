using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// HNSW single-query latency and recall@10 (vs exact, 200 fresh queries) at efSearch 16/32/64/128 and the calibrated
/// default (0), over 50k × 128 unit vectors with default M / efConstruction, on two data sets: "uniform" (random
/// directions: no low intrinsic dimension, the worst case) and "clustered" (1,000 random centres, points at cosine
/// ≈ 0.7 to their centre: closer to real embeddings). Each graph is built once per run (in-process job).
/// </summary>
[Config(typeof(RetrievalBenchConfig))]
public class HnswBenchmarks
{
    private const int N = 50_000, D = ExactSearchBenchmarks.D, K = 10, Queries = 200;

    internal sealed record Built(HnswIndex Index, float[] Queries, Dictionary<int, double> Recalls, double BuildSeconds);
    internal static readonly Dictionary<string, Built> Graphs = [];

    [Params("uniform", "clustered")]
    public string Data = "uniform";

    /// <summary>Beam width; 0 = the calibrated default.</summary>
    [Params(16, 32, 64, 128, 0)]
    public int EfSearch;

    private readonly int[] _ids = new int[K];
    private readonly float[] _scores = new float[K];
    private Built _built = null!;
    private int _next;

    [GlobalSetup]
    public void Setup()
    {
        if (!Graphs.TryGetValue(Data, out var built))
        {
            var vectors = Data == "uniform" ? ExactSearchBenchmarks.RandomUnit(N, 1) : Clustered(N, 1);
            var queries = Data == "uniform" ? ExactSearchBenchmarks.RandomUnit(Queries, 3) : Clustered(Queries, 3);
            var watch = Stopwatch.StartNew();
            var index = HnswIndex.Build(vectors, D);
            double seconds = watch.Elapsed.TotalSeconds;
            using var exact = new ExactIndex(vectors, D);
            var recalls = new Dictionary<int, double>();
            foreach (var ef in new[] { 16, 32, 64, 128, index.EfSearch }) recalls[ef] = index.Recall(exact, queries, Queries, K, ef);
            Graphs[Data] = built = new Built(index, queries, recalls, seconds);
            Console.WriteLine($"// HNSW {Data} {N}×{D}: build {seconds:F1} s, calibrated efSearch {index.EfSearch} (build-time recall {index.MeasuredRecall:F3}, fresh-query recall {recalls[index.EfSearch]:F3})");
        }
        _built = built;
    }

    /// <summary>1,000 random centres (same seed for store and queries); points at cosine ≈ 0.7 to their centre.</summary>
    private static float[] Clustered(int count, int seed)
    {
        var centres = ExactSearchBenchmarks.RandomUnit(1000, 99);
        var noise = ExactSearchBenchmarks.RandomUnit(count, seed + 1000);
        var rng = new Random(seed);
        var v = new float[count * D];
        for (int i = 0; i < count; i++)
        {
            int c = rng.Next(1000);
            double norm = 0;
            for (int j = 0; j < D; j++) { v[i * D + j] = centres[c * D + j] + noise[i * D + j]; norm += v[i * D + j] * v[i * D + j]; }
            for (int j = 0; j < D; j++) v[i * D + j] /= (float)Math.Sqrt(norm);
        }
        return v;
    }

    [Benchmark]
    public int Search()
    {
        int q = _next++ % Queries;
        var index = _built.Index;
        index.Search(_built.Queries.AsSpan(q * D, D), K, _ids, _scores, EfSearch == 0 ? index.EfSearch : EfSearch);
        return _ids[0];
    }
}
