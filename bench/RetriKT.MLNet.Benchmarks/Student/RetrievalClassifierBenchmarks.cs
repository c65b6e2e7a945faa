using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;
using TorchSharp;

namespace RetriKT.MLNet.Benchmarks.Student;

/// <summary>Shared setup: a default-shape student (64 hidden, 2 layers, 64 tokens) over a 10,000-entry store of real SST-2 sentences.</summary>
public static class StudentBenchSetup
{
    public const int StoreSize = 10_000;
    public const int Tokens = 64;

    public sealed class Row
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    public sealed class Output
    {
        public uint PredictedLabel { get; set; }
        [VectorType] public float[] Score { get; set; } = [];
    }

    public static List<Row> Sst2Train(int count) => File.ReadLines(Path.Combine(BenchPaths.SharedRoot(), "data", "SST-2", "train.tsv")).Skip(1)
        .Select(l => l.Split('\t')).Where(f => f.Length >= 2).Take(count).Select(f => new Row { Text = f[0], Label = f[1] }).ToList();

    /// <summary>
    /// Trains nothing (Epochs = 0: the cost of prediction does not depend on the weights' values) but builds the real
    /// vocabulary, store and embeddings for 10k entries.
    /// </summary>
    public static (MLContext Ml, RetrievalClassifierTransformer Student, List<Row> Queries) Create()
    {
        var ml = new MLContext(seed: 1);
        var rows = Sst2Train(StoreSize + 2048);
        var store = rows.Take(StoreSize).ToList();
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            // The shape these benchmarks were first measured with (the trainer's defaults before 2026-12-05), so runs compare.
            Epochs = 0, MaxLength = Tokens, RetrievalWeight = 0.5, HiddenSize = 64, FeedForwardSize = 256, MaxVocabularySize = 8000,
        }).Fit(ml.Data.LoadFromEnumerable(store));
        if (student.Store.Count < StoreSize * 0.95) throw new InvalidOperationException($"store holds {student.Store.Count} entries");
        // Queries of exactly 64 tokens: concatenated held-out sentences, truncated by the tokenizer to MaxLength.
        var held = rows.Skip(StoreSize).Select(r => r.Text).ToList();
        var queries = Enumerable.Range(0, 1024).Select(i => new Row { Text = string.Join(" ", Enumerable.Range(0, 12).Select(j => held[(i * 12 + j) % held.Count])) }).ToList();
        foreach (var q in queries.Take(8))
        {
            int n = Math.Min(student.Vocabulary.Encode(q.Text).Count + 2, student.MaxLength);
            if (n != Tokens) throw new InvalidOperationException($"query has {n} tokens, expected {Tokens}");
        }
        return (ml, student, queries);
    }

    /// <summary>FLOPs of one 64-token row through the encoder (2 × multiply-adds) plus the exact search over the store.</summary>
    public static double RowFlops(RetrievalClassifierTransformer s)
        => 2.0 * ManagedStudentEncoderFlops(s) + 2.0 * s.Store.Count * s.Dimension;

    private static long ManagedStudentEncoderFlops(RetrievalClassifierTransformer s)
    {
        var (h, layers, _, f) = s.Shape;
        long t = Tokens;
        return layers * (t * h * 3 * h + t * h * h + 2 * t * h * f + 2 * t * t * h) + h * s.LabelNames.Count;
    }
}

/// <summary>Reports GFLOP/s of a benchmark from its mean time and the FLOPs per operation it registered.</summary>
public sealed class GflopsColumn : IColumn
{
    public static readonly Dictionary<string, double> FlopsPerOperation = new();
    public string Id => "GFLOPs";
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Achieved floating-point rate (FLOPs per operation / mean time)";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        var name = benchmarkCase.Descriptor.WorkloadMethod.Name;
        if (report?.ResultStatistics is not { } stats || !Flops.TryGetValue(name, out var flops)) return "-";
        return (flops / stats.Mean).ToString("F2"); // FLOPs per ns = GFLOP/s
    }

    /// <summary>FLOPs per operation, by benchmark method name (set by the benchmark classes' static constructors).</summary>
    public static Dictionary<string, double> Flops => FlopsPerOperation;
}

/// <summary>p99 of per-operation times (meaningful with one invocation per iteration).</summary>
public sealed class P99Column : IColumn
{
    public string Id => "P99";
    public string ColumnName => "P99";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Statistics;
    public int PriorityInCategory => 10;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Time;
    public string Legend => "99th percentile of all measurements";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        => summary[benchmarkCase]?.ResultStatistics is { } s ? $"{s.Percentiles.Percentile(99) / 1000.0:F1} us" : "-";
}

/// <summary>
/// Single-row latency on one thread (torch.set_num_threads(1)): every iteration is ONE call, so P50/P99 are per-call
/// latencies. Managed path = what PredictionEngine uses; Torch path = the same row as a batch of one through TorchSharp;
/// TorchMatmul = a 512³ fp32 GEMM on the same thread, the machine's reference rate in this run.
/// </summary>
[Config(typeof(LatencyConfig))]
public class StudentSingleRowLatency
{
    private sealed class LatencyConfig : ManualConfig
    {
        public LatencyConfig()
        {
            AddJob(Job.Default.WithStrategy(RunStrategy.Monitoring).WithInvocationCount(1).WithUnrollFactor(1)
                .WithWarmupCount(200).WithIterationCount(3000).WithLaunchCount(1)
                // In-process: BenchmarkDotNet's generated project does not resolve libtorch's native package.
                .WithToolchain(InProcessEmitToolchain.Instance));
            AddColumn(StatisticColumn.P50, new P99Column(), new GflopsColumn());
        }
    }

    private MLContext _ml = null!;
    private RetrievalClassifierTransformer _student = null!;
    private PredictionEngine<StudentBenchSetup.Row, StudentBenchSetup.Output> _engine = null!;
    private List<StudentBenchSetup.Row> _queries = null!;
    private torch.Tensor _a = null!, _b = null!;
    private int _i;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(1);
        (_ml, _student, _queries) = StudentBenchSetup.Create();
        _engine = _ml.Model.CreatePredictionEngine<StudentBenchSetup.Row, StudentBenchSetup.Output>(_student);
        _a = torch.randn(512, 512);
        _b = torch.randn(512, 512);
        double row = StudentBenchSetup.RowFlops(_student);
        GflopsColumn.Flops[nameof(PredictionEngineManaged)] = row;
        GflopsColumn.Flops[nameof(TorchBatchOfOne)] = row;
        GflopsColumn.Flops[nameof(TorchMatmul512)] = 2.0 * 512 * 512 * 512;
        Console.WriteLine($"// student: {_student.ParameterCount:N0} parameters, store {_student.Store.Count} × {_student.Dimension}, {row / 1e6:F2} MFLOP per 64-token row");
    }

    [Benchmark(Baseline = true)]
    public uint PredictionEngineManaged() => _engine.Predict(_queries[_i++ & 1023]).PredictedLabel;

    [Benchmark]
    public float TorchBatchOfOne() => _student.PredictBatch([_queries[_i++ & 1023].Text])[0][0];

    [Benchmark]
    public void TorchMatmul512()
    {
        using var c = _a.matmul(_b);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _engine.Dispose();
        _student.Dispose();
        _a.Dispose();
        _b.Dispose();
    }
}

/// <summary>
/// Bulk scoring: Transform over 1,024 rows of 64 tokens (blocks of 64 rows per forward pass), all torch threads,
/// against PredictBatch (same forward passes without the IDataView) and a 512³ GEMM on the same threads.
/// </summary>
[Config(typeof(BulkConfig))]
public class StudentBulkTransform
{
    private sealed class BulkConfig : ManualConfig
    {
        public BulkConfig()
        {
            AddJob(Job.Default.WithWarmupCount(2).WithIterationCount(8).WithLaunchCount(1).WithToolchain(InProcessEmitToolchain.Instance));
            AddColumn(new GflopsColumn());
        }
    }

    public const int Rows = 1024;
    private MLContext _ml = null!;
    private RetrievalClassifierTransformer _student = null!;
    private IDataView _input = null!;
    private List<string> _texts = null!;
    private torch.Tensor _a = null!, _b = null!;

    [GlobalSetup]
    public void Setup()
    {
        (_ml, _student, var queries) = StudentBenchSetup.Create();
        _input = _ml.Data.LoadFromEnumerable(queries.Take(Rows));
        _texts = queries.Take(Rows).Select(q => q.Text).ToList();
        _a = torch.randn(512, 512);
        _b = torch.randn(512, 512);
        double row = StudentBenchSetup.RowFlops(_student);
        GflopsColumn.Flops[nameof(TransformScores)] = row * Rows;
        GflopsColumn.Flops[nameof(PredictBatch)] = row * Rows;
        GflopsColumn.Flops[nameof(TorchMatmul512AllThreads)] = 2.0 * 512 * 512 * 512;
        Console.WriteLine($"// torch threads: {torch.get_num_threads()}; rows/s = {Rows} / mean");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = 1)]
    public float TransformScores()
    {
        float sum = 0;
        foreach (var s in _student.Transform(_input).GetColumn<float[]>("Score")) sum += s[0];
        return sum;
    }

    [Benchmark]
    public int PredictBatch() => _student.PredictBatch(_texts).Length;

    [Benchmark]
    public void TorchMatmul512AllThreads()
    {
        using var c = _a.matmul(_b);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _student.Dispose();
        _a.Dispose();
        _b.Dispose();
    }
}
