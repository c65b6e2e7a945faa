using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using Microsoft.ML;
using RetriKT.MLNet.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Benchmarks;

/// <summary>Shared model shapes for the teacher benchmarks.</summary>
internal static class TeacherShapes
{
    /// <summary>A stories-class LLaMA for generation (random weights; speed does not depend on them).</summary>
    public static TeacherConfig Generation => new()
    {
        ModelType = "llama", VocabSize = 4096, HiddenSize = 256, IntermediateSize = 688, NumLayers = 6, NumHeads = 8,
        NumKeyValueHeads = 4, HeadDim = 32, MaxPositions = 512, TieWordEmbeddings = true,
    };

    /// <summary>~10M parameters: 6 × 12·320² + 8192·320 embedding (tied).</summary>
    public static TeacherConfig Training => new()
    {
        ModelType = "llama", VocabSize = 8192, HiddenSize = 320, IntermediateSize = 864, NumLayers = 6, NumHeads = 8,
        NumKeyValueHeads = 8, HeadDim = 40, MaxPositions = 256, TieWordEmbeddings = true,
    };
}

/// <summary>BenchmarkDotNet view of generation with and without the KV cache.</summary>
[SimpleJob(launchCount: 1, warmupCount: 1, iterationCount: 3)]
public class TeacherGenerationBenchmarks
{
    private TeacherModel _model = null!;

    [Params(128)] public int NewTokens;

    [GlobalSetup] public void Setup() => _model = TeacherModel.Create(TeacherShapes.Generation, null, seed: 1, new TeacherLoadOptions());
    [GlobalCleanup] public void Cleanup() => _model.Dispose();

    [Benchmark(Baseline = true)]
    public int WithoutKvCache() => Generate(false);

    [Benchmark]
    public int WithKvCache() => Generate(true);

    private int Generate(bool cache) => _model.Generate(new GenerationRequest
    {
        PromptIds = [[1, 5, 9, 13, 17, 21, 25, 29]], MaxNewTokens = NewTokens, StopTokenIds = [], UseKvCache = cache,
    }).Sequences[0].TokenIds.Length;
}

/// <summary>One-process report: every ratio is measured side by side in the same run.</summary>
public static class TeacherReport
{
    public static void Run(bool quick)
    {
        TorchDevicesInit();
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, cores: {Environment.ProcessorCount}");
        double matmul = MatmulGflops(quick ? 5 : 20);
        if (Environment.GetEnvironmentVariable("RETRIKT_BENCH_THREADS") is { } threads) torch.set_num_threads(int.Parse(threads));
        Console.WriteLine($"fp32 matmul (1024x1024x1024): {matmul:F1} GFLOP/s");

        using (var model = TeacherModel.Create(TeacherShapes.Generation, null, seed: 1, new TeacherLoadOptions()))
        {
            Console.WriteLine($"generation model: {model.Config} ({model.ParameterCount:N0} params)");
            foreach (int batch in new[] { 1, 4 })
            {
                var (with, without) = InterleavedTokensPerSecond(model, batch, 128, quick ? 1 : 3);
                Console.WriteLine($"generate batch {batch}, 128 new tokens: KV cache {with:F1} tok/s, full recompute {without:F1} tok/s, speed-up {with / without:F2}x");
            }
        }

        using (var model = TeacherModel.Create(TeacherShapes.Training, null, seed: 1, new TeacherLoadOptions { Trainable = true }))
        {
            int batch = 8, seq = 256, steps = quick ? 3 : 8;
            long n = model.ParameterCount;
            Console.WriteLine($"training model: {model.Config} ({n:N0} params)");
            var rng = new Random(1);
            var tokens = Enumerable.Range(0, 200_000).Select(_ => rng.Next(model.Config.VocabSize)).ToArray();
            var trainer = new TeacherPretrainer(new MLContext(seed: 1), new TeacherPretrainerOptions { Steps = 1, BatchSize = batch, SequenceLength = seq, WarmupSteps = 0 });
            trainer.Train(model, tokens); // warm-up (allocations, optimizer state)
            var timed = new TeacherPretrainer(new MLContext(seed: 1), new TeacherPretrainerOptions { Steps = steps, BatchSize = batch, SequenceLength = seq, WarmupSteps = 0 });
            var sw = Stopwatch.StartNew();
            timed.Train(model, tokens);
            sw.Stop();
            double tokPerSec = (double)steps * batch * seq / sw.Elapsed.TotalSeconds;
            // Training FLOPs per token: 6·N for the weights + 6·L·T·d for attention scores/values (forward 2, backward 4).
            var c = model.Config;
            double flopsPerToken = 6.0 * n + 6.0 * c.NumLayers * seq * c.HiddenSize;
            double gflops = tokPerSec * flopsPerToken / 1e9;
            Console.WriteLine($"training batch {batch}x{seq}: {tokPerSec:F0} tok/s, {gflops:F1} GFLOP/s achieved = {gflops / matmul:P0} of measured matmul rate");
        }
    }

    private static void TorchDevicesInit() => RetriKT.MLNet.Common.TorchDevices.EnsureNativeBackend();

    private static double MatmulGflops(int reps)
    {
        using var scope = NewDisposeScope();
        var a = randn(1024, 1024); var b = randn(1024, 1024);
        for (int i = 0; i < 3; i++) a.matmul(b).Dispose();
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < reps; i++) a.matmul(b).Dispose();
        sw.Stop();
        return 2.0 * 1024 * 1024 * 1024 * reps / sw.Elapsed.TotalSeconds / 1e9;
    }

    // The box may be shared: alternate the two variants and keep each one's best run, so load swings hit both alike.
    private static (double With, double Without) InterleavedTokensPerSecond(TeacherModel model, int batch, int newTokens, int rounds)
    {
        var prompts = Enumerable.Range(0, batch).Select(i => new[] { 1, 5 + i, 9, 13, 17, 21, 25, 29 }).ToArray();
        GenerationRequest Request(bool cache, int n) => new() { PromptIds = prompts, MaxNewTokens = n, StopTokenIds = [], UseKvCache = cache };
        model.Generate(Request(true, 4)); model.Generate(Request(false, 4));
        double bestWith = 0, bestWithout = 0;
        for (int r = 0; r < rounds; r++)
        {
            foreach (bool cache in new[] { true, false })
            {
                var sw = Stopwatch.StartNew();
                int produced = model.Generate(Request(cache, newTokens)).Sequences.Sum(s => s.TokenIds.Length);
                double rate = produced / sw.Elapsed.TotalSeconds;
                if (cache) bestWith = Math.Max(bestWith, rate); else bestWithout = Math.Max(bestWithout, rate);
            }
        }
        return (bestWith, bestWithout);
    }
}
