using System.Diagnostics;
using System.Globalization;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// <c>dotnet run -c Release --project bench/RetriKT.MLNet.Benchmarks -- calibration [--rows 5000,10000,30000]</c>: the
/// beam HNSW's build-time calibration picks on a real store against what real queries need. The store is the first
/// rows of SST-2's training sentences keyed by the shared tiny BERT (d = 32), the queries the 872 official dev
/// sentences; per store and target (<see cref="VectorIndexes.AutoHnswOptions"/> and the defaults) the calibrated beam,
/// its leave-one-out recall, the dev sentences' recall at it, and single-query times of HNSW at that beam and of the
/// exact scan (alternating rounds, best of 3). docs/SEARCH.md has the table.
/// </summary>
internal static class CalibrationReport
{
    private const int Rounds = 3;

    /// <summary>The report; <paramref name="args"/>: <c>--rows</c> a comma-separated list of store sizes.</summary>
    public static void Run(string[] args)
    {
        int[] sizes = (BenchArgs.Value(args, "--rows") ?? "5000,10000,30000").Split(',').Select(s => BenchArgs.Int("--rows", s)).ToArray();
        string shared = BenchPaths.SharedRoot();
        var encoder = ManagedBertSentenceEncoder.Load(Path.Combine(shared, "models", "hf-tiny-random-bert"));
        int d = encoder.Dimension;
        float[] Encode(string file, int max, out int count)
        {
            var texts = File.ReadLines(Path.Combine(shared, "data", "SST-2", file)).Skip(1).Where(l => l.Length > 0)
                .Select(l => (l.Split('\t')[0], (string?)null)).Take(max).ToList();
            count = texts.Count;
            var vectors = new float[count * d];
            encoder.Encode(texts, vectors);
            return vectors;
        }
        var train = Encode("train.tsv", sizes.Max(), out _);
        var dev = Encode("dev.tsv", int.MaxValue, out int devCount);
        Console.WriteLine($"# HNSW calibration on SST-2 (tiny BERT, d = {d}), {devCount} dev queries; times best of {Rounds} alternating rounds; {Environment.ProcessorCount} logical CPUs");
        Console.WriteLine("| store | target | calibrated beam | leave-one-out recall | dev recall | HNSW (µs/query) | exact (µs/query) |");
        Console.WriteLine("|---:|---|---:|---:|---:|---:|---:|");
        foreach (int n in sizes)
        {
            var vectors = train.AsMemory(0, n * d);
            var exact = new ExactIndex(vectors, d);
            foreach (var options in new[] { VectorIndexes.AutoHnswOptions(), new HnswOptions() })
            {
                var hnsw = HnswIndex.Build(vectors, d, options);
                int k = options.CalibrationK;
                double recall = hnsw.Recall(exact, dev, devCount, k);
                double hnswMicros = double.MaxValue, exactMicros = double.MaxValue;
                var (ids, scores) = (new int[k], new float[k]);
                for (int round = 0; round < Rounds; round++)
                {
                    hnswMicros = Math.Min(hnswMicros, Time(q => hnsw.Search(dev.AsSpan(q * d, d), k, ids, scores), devCount));
                    exactMicros = Math.Min(exactMicros, Time(q => exact.Search(dev.AsSpan(q * d, d), k, ids, scores), devCount));
                }
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {n:N0} | recall@{k} {options.TargetRecall} | {hnsw.EfSearch} | {hnsw.MeasuredRecall:F4} | {recall:F4} | {hnswMicros:F0} | {exactMicros:F0} |"));
            }
        }
    }

    private static double Time(Action<int> search, int queries)
    {
        var clock = Stopwatch.StartNew();
        for (int q = 0; q < queries; q++) search(q);
        return clock.Elapsed.TotalMicroseconds / queries;
    }
}
