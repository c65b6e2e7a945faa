using System.Diagnostics;
using System.Globalization;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// <c>dotnet run -c Release --project bench/RetriKT.MLNet.Benchmarks -- search [--quick] [--d N] [--min N] [--max N]</c>: exact vs HNSW side by
/// side in one process, on the shapes a knowledge store has (dimension 48 and 384, 8k to 256k entries, k = 16):
/// single-query latency of each (the two timed in alternating rounds, so a shared CPU's load weighs on both alike;
/// the best round of each is kept), HNSW's recall@16 against exact on fresh queries, and its build time. HNSW is
/// calibrated as the automatic choice builds it (<see cref="VectorIndexes.AutoHnswOptions"/>: calibrated for recall@16 0.995,
/// a margin over the 0.99 it guarantees). The data are clustered unit vectors (random centres, points at cosine ≈ 0.7 to theirs), closer to real
/// embeddings than uniform directions. The table picks <see cref="VectorIndexes"/>' switch point.
/// </summary>
internal static class SearchSwitchReport
{
    private const int K = 16, Queries = 200, Rounds = 3;

    /// <summary>The report; <paramref name="args"/>: <c>--quick</c> (up to 32k), <c>--d N</c> (one dimension), <c>--min N</c>, <c>--max N</c> (smallest, largest store).</summary>
    public static void Run(string[] args)
    {
        string? Value(string name) => BenchArgs.Value(args, name);
        int max = args.Contains("--quick") ? 32_768 : BenchArgs.Int("--max", Value("--max") ?? "262144");
        int min = BenchArgs.Int("--min", Value("--min") ?? "0", min: 0);
        int[] sizes = new[] { 8_192, 16_384, 32_768, 65_536, 131_072, 262_144 }.Where(n => n >= min && n <= max).ToArray();
        int[] dimensions = Value("--d") is { } one ? [BenchArgs.Int("--d", one)] : [48, 384];
        Console.WriteLine($"# exact vs HNSW, k = {K}, {Queries} fresh queries, best of {Rounds} alternating rounds; {Environment.ProcessorCount} logical CPUs");
        Console.WriteLine("| d | store | HNSW build (s) | efSearch | recall@16 | exact (µs/query) | HNSW (µs/query) | exact / HNSW |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (int d in dimensions)
            foreach (int n in sizes)
            {
                var vectors = Clustered(n, d, seed: 1);
                var queries = Clustered(Queries, d, seed: 3);
                var exact = new ExactIndex(vectors, d);
                var clock = Stopwatch.StartNew();
                var hnsw = HnswIndex.Build(vectors, d, VectorIndexes.AutoHnswOptions());
                double build = clock.Elapsed.TotalSeconds;
                double recall = hnsw.Recall(exact, queries, Queries, K);
                double exactMicros = double.MaxValue, hnswMicros = double.MaxValue;
                for (int round = 0; round < Rounds; round++)
                {
                    exactMicros = Math.Min(exactMicros, MicrosPerQuery(exact, queries, d));
                    hnswMicros = Math.Min(hnswMicros, MicrosPerQuery(hnsw, queries, d));
                }
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {d} | {n:N0} | {build:F1} | {hnsw.EfSearch} | {recall:F3} | {exactMicros:F0} | {hnswMicros:F0} | {exactMicros / hnswMicros:F2} |"));
                exact.Dispose();
            }
    }

    private static double MicrosPerQuery(IVectorIndex index, float[] queries, int d)
    {
        var ids = new int[K];
        var scores = new float[K];
        var clock = Stopwatch.StartNew();
        for (int q = 0; q < Queries; q++) index.Search(queries.AsSpan(q * d, d), K, ids, scores);
        return clock.Elapsed.TotalMicroseconds / Queries;
    }

    /// <summary>Unit vectors around 1,000 random centres (the same centres for store and queries), cosine ≈ 0.7 to theirs.</summary>
    internal static float[] Clustered(int count, int d, int seed)
    {
        var centres = Gaussian(1000, d, new Random(99));
        var rng = new Random(seed);
        var noise = Gaussian(count, d, rng);
        var v = new float[count * d];
        for (int i = 0; i < count; i++)
        {
            int c = rng.Next(1000);
            double norm = 0;
            for (int j = 0; j < d; j++) { v[i * d + j] = centres[c * d + j] + noise[i * d + j]; norm += v[i * d + j] * v[i * d + j]; }
            for (int j = 0; j < d; j++) v[i * d + j] /= (float)Math.Sqrt(norm);
        }
        return v;
    }

    /// <summary>Unit vectors in uniformly random directions.</summary>
    private static float[] Gaussian(int count, int d, Random rng)
    {
        var v = new float[count * d];
        for (int i = 0; i < count; i++)
        {
            double norm = 0;
            for (int j = 0; j < d; j++)
            {
                double g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
                v[i * d + j] = (float)g; norm += g * g;
            }
            for (int j = 0; j < d; j++) v[i * d + j] /= (float)Math.Sqrt(norm);
        }
        return v;
    }
}
