using BenchmarkDotNet.Running;
using RetriKT.MLNet.Benchmarks;

// `dotnet run -c Release -- teacher [--quick]`: side-by-side teacher numbers in one process (KV cache speed-up,
// batch-1 decode against the measured memory bound, batch-64 decode and training against the measured fp32 matmul rate).
// `dotnet run -c Release -- ppo [--quick] [--stories]`: PPO rollout tokens/s and time per step (rollout/reward/scoring/update);
// --stories measures the stories260K teacher only; RETRIKT_BENCH_PPO_CSV=folder writes each run's per-step metrics there.
// `dotnet run -c Release -- blackbox [--quick]`: TeacherServer 16 concurrent vs 16 sequential requests, black-box
// extraction samples/s with one vs two servers (ratios from one run).
// `dotnet run -c Release -- search [--quick] [--d N] [--min N] [--max N]`: exact vs HNSW query time and recall@16 at d = 48 and 384, 8k to 256k
// entries, side by side (the table behind VectorIndexes' switch point; docs/SEARCH.md).
// `dotnet run -c Release -- calibration [--rows 5000,10000,30000]`: HNSW's calibrated beam on real SST-2 sentences (tiny
// BERT keys) against the dev sentences' recall at it, and query times at it vs exact (docs/SEARCH.md).
// `dotnet run -c Release -- softlabels [--quick]`: extraction's soft-label pass, row per label word vs one pass (SST-2
// stand-in teacher, real SST-2 sentences, alternating rounds, medians).
// `dotnet run -c Release -- decode-batches [--quick]`: 64 rows as one torch batch (the harness's extraction batch) vs four
// batches of 16 (managed and torch), alternating rounds.
// Anything else goes to BenchmarkDotNet (e.g. `-- --filter *TeacherGeneration*`).
// A bad argument or setting (BenchArgs) prints one line and exits 2, as the samples do.
try
{
    Dispatch(args);
    return 0;
}
catch (BenchUsageException e)
{
    Console.Error.WriteLine(e.Message);
    return 2;
}

static void Dispatch(string[] args)
{
    if (args.Length > 0 && args[0] == "ppo")
    {
        RetriKT.MLNet.Benchmarks.SoftPrompt.PpoReport.Run(args.Contains("--quick"), args.Contains("--stories"));
        return;
    }
    if (args.Length > 0 && args[0] == "blackbox")
    {
        RetriKT.MLNet.Benchmarks.BlackBox.BlackBoxReport.Run(args.Contains("--quick"));
        return;
    }
    if (args.Length > 0 && args[0] == "search")
    {
        RetriKT.MLNet.Benchmarks.Retrieval.SearchSwitchReport.Run(args);
        return;
    }
    if (args.Length > 0 && args[0] == "calibration")
    {
        RetriKT.MLNet.Benchmarks.Retrieval.CalibrationReport.Run(args);
        return;
    }
    if (args.Length > 0 && args[0] == "softlabels")
    {
        RetriKT.MLNet.Benchmarks.Extraction.SoftLabelReport.Run(args.Contains("--quick"));
        return;
    }
    if (args.Length > 0 && args[0] == "decode-batches")
    {
        DecodeBatchReport.Run(args.Contains("--quick"));
        return;
    }
    if (args.Length > 0 && args[0] == "teacher")
    {
        TeacherReport.Run(args.Contains("--quick"));
        return;
    }
    BenchmarkSwitcher.FromAssembly(typeof(TeacherReport).Assembly).Run(args);
}
