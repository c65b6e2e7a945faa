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

/// <summary>
/// One-process report: every ratio is measured side by side in the same run, against this machine's own bounds
/// (stream read bandwidth and fp32 matmul rate, both measured at the thread count the workloads use).
/// </summary>
public static class TeacherReport
{
    public static void Run(bool quick)
    {
        TorchDevicesInit();
        // Set first: the bounds must be measured at the thread count the workloads run with.
        if (BenchArgs.Threads() is { } threads) torch.set_num_threads(threads);
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, cores: {Environment.ProcessorCount}");
        double matmul = MatmulGflops(quick ? 5 : 20);
        double bandwidth = ReadBandwidthGBps(quick ? 5 : 20);
        Console.WriteLine($"fp32 matmul (1024x1024x1024, best rep): {matmul:F1} GFLOP/s; stream read bandwidth (sum over 256 MB, best rep): {bandwidth:F1} GB/s");

        using (var model = TeacherModel.Create(TeacherShapes.Generation, null, seed: 1, new TeacherLoadOptions()))
        {
            Console.WriteLine($"generation model: {model.Config} ({model.ParameterCount:N0} params)");
            // Memory bound of decode: every weight is read once per step (the tied embedding once, as the head).
            double weightBytes = model.ParameterCount * (double)model.DType.ElementSize(), boundMs = weightBytes / (bandwidth * 1e9) * 1e3;
            Console.WriteLine($"memory bound of one decoding step: {weightBytes / 1e6:F1} MB weights / {bandwidth:F1} GB/s = {boundMs:F3} ms");
            foreach (int batch in new[] { 1, 4 })
            {
                var rates = InterleavedTokensPerSecond(model, batch, 128, quick ? 2 : 4);
                double managed = rates[Decoding.Managed], torchPath = rates[Decoding.Torch], full = rates[Decoding.Recompute];
                Console.WriteLine($"generate batch {batch}, 128 new tokens: KV cache managed {managed:F1} tok/s, torch {torchPath:F1} tok/s, full recompute {full:F1} tok/s; " +
                                  $"speed-up over recompute: managed {managed / full:F2}x, torch {torchPath / full:F2}x; managed/torch {managed / torchPath:F2}x");
                // A step serves `batch` rows with one pass over the weights: ms per step against the bound.
                foreach (var (name, rate) in new[] { ("managed", managed), ("torch", torchPath) })
                    Console.WriteLine($"  batch-{batch} decode ({name}): {1e3 * batch / rate:F3} ms/step; decode runs at {boundMs * rate / batch / 1e3:P0} of the memory bound");
            }
            // Batch-64 decode against the matmul rate: FLOPs per generated token = 2·(matmul parameters) for the weights
            // + 4·L·(heads·head_dim)·ctx for scores and values over the average context (prompt + half the new tokens).
            {
                const int batch = 64, prompt = 8, newTokens = 128;
                double rate = BestTokensPerSecond(model, batch, prompt, newTokens, quick ? 1 : 3);
                var c = model.Config;
                double context = prompt + (newTokens + 1) / 2.0;
                double flopsPerToken = 2.0 * MatmulParameters(model) + 4.0 * c.NumLayers * c.NumHeads * c.HeadDim * context;
                double gflops = rate * flopsPerToken / 1e9;
                Console.WriteLine($"generate batch {batch}, {newTokens} new tokens (KV cache): {rate:F0} tok/s = {gflops:F1} GFLOP/s " +
                                  $"(2·{MatmulParameters(model):N0} + 4·L·H·D·{context:F1} FLOP/token) = {gflops / matmul:P0} of the measured matmul rate");
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
            // Training FLOPs per token (forward + backward): 6·M for the weight matmuls (forward 2, backward 4: input and
            // weight gradients), M = matmul parameters (2-D weights; the tied embedding counted once, as the head; norms
            // excluded), plus 6·L·d·T for causal attention (QKᵀ and AV: forward 2·2·d per visible key, backward twice
            // that, over T/2 visible keys on average: 12·L·d·T/2).
            var c = model.Config;
            long m = MatmulParameters(model);
            double flopsPerToken = 6.0 * m + 6.0 * c.NumLayers * c.NumHeads * c.HeadDim * seq;
            double gflops = tokPerSec * flopsPerToken / 1e9;
            Console.WriteLine($"training batch {batch}x{seq}: {tokPerSec:F0} tok/s, {gflops:F1} GFLOP/s achieved " +
                              $"(6·{m:N0} + 6·L·d·T = {flopsPerToken / 1e6:F1} MFLOP/token) = {gflops / matmul:P0} of measured matmul rate");
            if (gflops > matmul) Console.WriteLine("  (above the measured matmul rate: a disturbed measurement; rerun on a quieter machine)");
        }
    }

    private static void TorchDevicesInit() => RetriKT.MLNet.Common.TorchDevices.EnsureNativeBackend();

    /// <summary>Parameters that take part in a matmul per token: 2-D weights, less an untied input embedding (a lookup).</summary>
    private static long MatmulParameters(TeacherModel model) =>
        model.NamedParameters().Where(p => p.Parameter.dim() == 2)
            .Where(p => model.Config.TieWordEmbeddings || !(p.Name.EndsWith("embed_tokens.weight", StringComparison.Ordinal) || p.Name.EndsWith("wte.weight", StringComparison.Ordinal)))
            .Where(p => !p.Name.EndsWith("wpe.weight", StringComparison.Ordinal))
            .Sum(p => p.Parameter.numel());

    // Best of the timed reps: the machine's rate when nothing else gets in the way (a peak, so fractions stay <= 100 %).
    private static double MatmulGflops(int reps)
    {
        using var scope = NewDisposeScope();
        var a = randn(1024, 1024); var b = randn(1024, 1024);
        for (int i = 0; i < 3; i++) a.matmul(b).Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * 1024 * 1024 * 1024 / best / 1e9;
    }

    // Read bandwidth from a reduction over a buffer far larger than the caches (what decode does with its weights).
    private static double ReadBandwidthGBps(int reps)
    {
        using var scope = NewDisposeScope();
        var buffer = ones(64L << 20);   // 64 Mi floats = 256 MB
        buffer.sum().Dispose();
        double best = double.MaxValue;
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            buffer.sum().Dispose();
            best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return buffer.numel() * 4.0 / best / 1e9;
    }

    private static double BestTokensPerSecond(TeacherModel model, int batch, int prompt, int newTokens, int rounds)
    {
        var prompts = Enumerable.Range(0, batch).Select(i => Enumerable.Range(0, prompt).Select(j => 1 + (i * 7 + j * 13) % 4000).ToArray()).ToArray();
        GenerationRequest Request(int n) => new() { PromptIds = prompts, MaxNewTokens = n, StopTokenIds = [] };
        model.Generate(Request(4));
        double best = 0;
        for (int r = 0; r < rounds; r++)
        {
            var sw = Stopwatch.StartNew();
            int produced = model.Generate(Request(newTokens)).Sequences.Sum(s => s.TokenIds.Length);
            best = Math.Max(best, produced / sw.Elapsed.TotalSeconds);
        }
        return best;
    }
    private enum Decoding { Managed, Torch, Recompute }

    // The box may be shared: alternate the variants (managed decode, torch decode, both with the KV cache, and torch
    // full recompute) and keep each one's best run, so load swings hit them alike.
    private static Dictionary<Decoding, double> InterleavedTokensPerSecond(TeacherModel model, int batch, int newTokens, int rounds)
    {
        var prompts = Enumerable.Range(0, batch).Select(i => new[] { 1, 5 + i, 9, 13, 17, 21, 25, 29 }).ToArray();
        GenerationRequest Request(Decoding how, int n) => new()
        {
            PromptIds = prompts, MaxNewTokens = n, StopTokenIds = [], UseKvCache = how != Decoding.Recompute, TorchDecode = how == Decoding.Torch,
        };
        var best = Enum.GetValues<Decoding>().ToDictionary(how => how, _ => 0.0);
        foreach (var how in best.Keys) model.Generate(Request(how, 4));
        for (int r = 0; r < rounds; r++)
        {
            foreach (var how in Enum.GetValues<Decoding>())
            {
                var sw = Stopwatch.StartNew();
                int produced = model.Generate(Request(how, newTokens)).Sequences.Sum(s => s.TokenIds.Length);
                best[how] = Math.Max(best[how], produced / sw.Elapsed.TotalSeconds);
            }
        }
        return best;
    }
}

/// <summary>
/// The extractor's batch question, side by side in one run: 64 rows decoded as one torch batch (the harness's
/// ExtractionBatchSize) against the same 64 rows as four batches of 16, managed (the library's default batch) and
/// torch. Prompts of 8 tokens, 48 new tokens (SST-2's sample length), no stop, alternating rounds, each variant's best.
/// </summary>
public static class DecodeBatchReport
{
    public static void Run(bool quick)
    {
        RetriKT.MLNet.Common.TorchDevices.EnsureNativeBackend();
        if (BenchArgs.Threads() is { } threads) torch.set_num_threads(threads);
        Console.WriteLine($"torch threads: {torch.get_num_threads()}, cores: {Environment.ProcessorCount}");
        using var model = TeacherModel.Create(TeacherShapes.Generation, null, seed: 1, new TeacherLoadOptions());
        Console.WriteLine($"generation model: {model.Config} ({model.ParameterCount:N0} params)");
        const int rows = 64, newTokens = 48;
        var prompts = Enumerable.Range(0, rows).Select(i => Enumerable.Range(0, 8).Select(j => 1 + (i * 7 + j * 13) % 4000).ToArray()).ToArray();
        int Generate(int batch, bool torchDecode)
        {
            int produced = 0;
            for (int start = 0; start < rows; start += batch)
                produced += model.Generate(new GenerationRequest
                {
                    PromptIds = prompts[start..(start + batch)], MaxNewTokens = newTokens, StopTokenIds = [], TorchDecode = torchDecode,
                }).Sequences.Sum(s => s.TokenIds.Length);
            return produced;
        }
        var variants = new (string Name, int Batch, bool Torch)[] { ("1 x 64, torch", 64, true), ("4 x 16, managed", 16, false), ("4 x 16, torch", 16, true) };
        var best = variants.ToDictionary(v => v.Name, _ => 0.0);
        foreach (var v in variants) Generate(v.Batch, v.Torch);
        for (int round = 0; round < (quick ? 3 : 6); round++)
            foreach (var v in variants)
            {
                var sw = Stopwatch.StartNew();
                int produced = Generate(v.Batch, v.Torch);
                best[v.Name] = Math.Max(best[v.Name], produced / sw.Elapsed.TotalSeconds);
            }
        foreach (var v in variants)
            Console.WriteLine($"{rows} rows, {newTokens} new tokens, {v.Name}: {best[v.Name]:F0} tok/s ({best[v.Name] / best[variants[0].Name]:F2}x the 1 x 64 torch batch)");
    }
}
