using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace RetriKT.MLNet.Benchmarks.Retrieval;

/// <summary>
/// Short in-process job (few iterations; in-process so the bound columns can read the bandwidth and GEMM-peak cases
/// measured in the same run, and the HNSW graph is built once).
/// </summary>
public sealed class RetrievalBenchConfig : ManualConfig
{
    public RetrievalBenchConfig()
    {
        AddJob(Job.ShortRun.WithWarmupCount(2).WithIterationCount(5).WithToolchain(InProcessEmitToolchain.Instance));
        AddColumn(new BoundColumn(BoundColumn.Kind.Qps), new BoundColumn(BoundColumn.Kind.MemoryBound), new BoundColumn(BoundColumn.Kind.GemmBound));
        AddColumn(new HnswColumn(HnswColumn.Kind.Recall), new HnswColumn(HnswColumn.Kind.BuildSeconds));
        WithOptions(ConfigOptions.DisableOptimizationsValidator);
    }
}

/// <summary>
/// Queries/s of an exact-search case and its fraction of the two physical bounds, measured in the same run:
/// memory bound QPS = 1 / (time of one streaming read of the N·d floats) = bandwidth / (4·N·d);
/// GEMM bound QPS = peak / (2·N·d), with peak from a 1024³ torch matmul.
/// </summary>
public sealed class BoundColumn(BoundColumn.Kind kind) : IColumn
{
    public enum Kind { Qps, MemoryBound, GemmBound }

    public string Id => "Bound" + kind;
    public string ColumnName => kind switch { Kind.Qps => "QPS", Kind.MemoryBound => "% mem bound", _ => "% GEMM bound" };
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => (int)kind;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => kind switch
    {
        Kind.Qps => "Queries per second (1 / mean time per query)",
        Kind.MemoryBound => "QPS / (bandwidth / (4·N·d)), bandwidth from StreamRead over the same N·d floats",
        _ => "achieved FLOP/s (2·N·d per query) / torch matmul peak (GemmPeak)",
    };
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        var method = benchmarkCase.Descriptor.WorkloadMethod.Name;
        if (benchmarkCase.Descriptor.Type != typeof(ExactSearchBenchmarks) || method is "StreamRead" or "GemmPeak") return "-";
        double? perQuery = summary[benchmarkCase]?.ResultStatistics?.Mean; // ns per query (OperationsPerInvoke applied)
        if (perQuery is not > 0) return "?";
        int n = (int)benchmarkCase.Parameters["N"];
        double qps = 1e9 / perQuery.Value;
        switch (kind)
        {
            case Kind.Qps: return qps.ToString("N0");
            case Kind.MemoryBound:
                double? stream = Mean(summary, "StreamRead", n);
                return stream is > 0 ? (100 * stream.Value / perQuery.Value).ToString("F0") + "%" : "?";
            default:
                double? gemm = Mean(summary, "GemmPeak", n);
                if (gemm is not > 0) return "?";
                double peakFlops = ExactSearchBenchmarks.GemmFlop / (gemm.Value * 1e-9);
                double achieved = qps * 2.0 * n * ExactSearchBenchmarks.D;
                return $"{100 * achieved / peakFlops:F0}% ({achieved / 1e9:F0}/{peakFlops / 1e9:F0} GF/s)";
        }
    }

    private static double? Mean(Summary summary, string method, int n) => summary.Reports
        .FirstOrDefault(r => r.BenchmarkCase.Descriptor.WorkloadMethod.Name == method && (int)r.BenchmarkCase.Parameters["N"] == n)
        ?.ResultStatistics?.Mean;
}

/// <summary>Recall@10 against exact (200 queries) and build time of the HNSW cases, measured at setup.</summary>
public sealed class HnswColumn(HnswColumn.Kind kind) : IColumn
{
    public enum Kind { Recall, BuildSeconds }

    public string Id => "Hnsw" + kind;
    public string ColumnName => kind == Kind.Recall ? "Recall@10" : "Build s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 10 + (int)kind;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => kind == Kind.Recall ? "Recall@10 vs exact search over 200 fresh random queries" : "HNSW build time (single-threaded)";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        if (benchmarkCase.Descriptor.Type != typeof(HnswBenchmarks)) return "-";
        if (benchmarkCase.Parameters["Data"] is not string data || !HnswBenchmarks.Graphs.TryGetValue(data, out var built)) return "-";
        if (kind == Kind.BuildSeconds) return built.BuildSeconds.ToString("F1");
        if (benchmarkCase.Parameters["EfSearch"] is not int e) return "-";
        if (e == 0) e = built.Index.EfSearch;
        return built.Recalls.TryGetValue(e, out var r) ? $"{r:F3} (ef {e})" : "-";
    }
}
