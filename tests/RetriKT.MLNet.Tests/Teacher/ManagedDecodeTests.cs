using RetriKT.MLNet.Common;
using Microsoft.ML;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// The managed CPU decoding path (<see cref="ManagedLlamaDecoder"/>) against the torch path it replaces in
/// <see cref="TeacherModel.Generate"/>: step logits, greedy sequences, padded batches, soft prompts, seeded samples, and
/// weights changed by training between calls.
/// </summary>
public class ManagedDecodeTests
{
    private static TeacherModel Stories(bool trainable = false) =>
        TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K", "stories260K.bin"), new TeacherLoadOptions { Trainable = trainable });

    /// <summary>
    /// Prefills left-padded <paramref name="prompts"/> (after an optional soft <paramref name="prefix"/>) on torch, then
    /// feeds the torch path's greedy token to both paths for <paramref name="steps"/> steps and returns the largest
    /// logit difference relative to the largest torch logit (at least 1) over all steps.
    /// </summary>
    private static double WorstStepDifference(TeacherModel model, int[][] prompts, int steps, Tensor? prefix = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (embeds, mask) = Inputs(model, prompts, prefix);
        int batch = prompts.Length, prefixLength = (int)(prefix?.shape[0] ?? 0), slots = (int)embeds.shape[1];
        using var torchCache = new KvCache(model.Config.NumLayers, slots + steps);
        var torchLogits = model.LastLogits(model.RunDecoder(embeds, mask, torchCache));
        var decoder = Prefilled(model, prompts, prefix, steps);
        double worst = 0;
        for (int step = 0; step < steps; step++)
        {
            var next = torchLogits.argmax(-1);
            var managedLogits = decoder.Step(next.data<long>().ToArray());
            if (mask is not null) mask = cat([mask, ones(batch, 1, ScalarType.Int64)], 1);
            torchLogits = model.LastLogits(model.RunDecoder(model.Module.EmbedTokens(next.unsqueeze(1)), mask, torchCache));
            double scale = Math.Max(1, torchLogits.abs().max().item<float>());
            worst = Math.Max(worst, managedLogits.sub(torchLogits).abs().max().item<float>() / scale);
        }
        return worst;
    }

    /// <summary>Embeddings and key mask (null without padding) of [prefix][left padding][prompt], as Generate lays them out.</summary>
    private static (Tensor Embeds, Tensor? Mask) Inputs(TeacherModel model, int[][] prompts, Tensor? prefix)
    {
        int batch = prompts.Length, longest = prompts.Max(p => p.Length);
        var ids = new long[batch * longest]; var mask = new long[batch * longest];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < prompts[b].Length; j++) { ids[b * longest + longest - prompts[b].Length + j] = prompts[b][j]; mask[b * longest + longest - prompts[b].Length + j] = 1; }
        var embeds = model.Module.EmbedTokens(tensor(ids, new long[] { batch, longest }));
        Tensor? maskT = prompts.Any(p => p.Length < longest) ? tensor(mask, new long[] { batch, longest }) : null;
        if (prefix is null) return (embeds, maskT);
        embeds = cat([prefix.unsqueeze(0).expand(batch, -1, -1), embeds], 1);
        return (embeds, maskT is null ? null : cat([ones(batch, prefix.shape[0], ScalarType.Int64), maskT], 1));
    }

    /// <summary>A managed decoder that took over a torch prefill of the prompts, with room for <paramref name="steps"/> more slots.</summary>
    private static ManagedLlamaDecoder Prefilled(TeacherModel model, int[][] prompts, Tensor? prefix, int steps)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (embeds, mask) = Inputs(model, prompts, prefix);
        int slots = (int)embeds.shape[1];
        using var cache = new KvCache(model.Config.NumLayers, slots);
        model.RunDecoder(embeds, mask, cache);
        var decoder = ManagedLlamaDecoder.TryCreate(model.Module, prompts.Length, slots + steps);
        Assert.NotNull(decoder);
        decoder.AdoptPrefill(cache, slots - prompts.Max(p => p.Length), prompts.Select(p => p.Length).ToArray());
        return decoder;
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance = 1e-4)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).DefaultIfEmpty(0).Max();
        Assert.True(worst < tolerance, $"max |Δ log-prob| = {worst:G3}");
    }

    // Random weights with every parameter perturbed (norm weights off 1, biases off 0), so each term of the step matters.
    private static TeacherModel RandomModel(TeacherConfig config)
    {
        var model = TeacherModel.Create(config, null, seed: 3, new TeacherLoadOptions());
        using var noGrad = no_grad();
        using var generator = new Generator(11);
        using var scale = 0.05.ToScalar(); // held, not a temporary (HeldScalarTests)
        foreach (var (_, p) in model.NamedParameters())
            using (var noise = randn(p.shape, generator: generator)) p.add_(noise.mul_(scale), HeldScalars.One);
        return model;
    }

    [SharedDataFact]
    public void ManagedStepLogitsEqualTorchStepLogitsOnStories260K()
    {
        using var model = Stories();
        var tok = model.Tokenizer!;
        int[] once = tok.Encode("Once upon a time", addBos: true), lily = tok.Encode("Lily", addBos: true);
        Assert.True(WorstStepDifference(model, [once], 40) < 1e-4);
        // Left padding in a batch, and a soft-prompt prefix before the padding.
        Assert.True(WorstStepDifference(model, [once, lily, tok.Encode("One day, a big dog saw a ball", addBos: true)], 30) < 1e-4);
        // Five rows: four go through the four-input kernel, one through the single-input one.
        Assert.True(WorstStepDifference(model, [lily, once, [1], tok.Encode("The cat", addBos: true), once], 20) < 1e-4);
        using var prefix = randn(4, model.Config.HiddenSize, generator: new Generator(5)).mul_(HeldScalars.Half);
        double withPrefix = WorstStepDifference(model, [lily, once], 20, prefix);
        Assert.True(withPrefix < 1e-4, $"with prefix: {withPrefix:G3}");
    }

    [Fact]
    public void ManagedStepLogitsEqualTorchStepLogitsForGroupedQueryLlama3RopeBiasesAndAnUntiedHead()
    {
        // Odd sizes (rows and columns off the kernels' blocks), Qwen2-style q/k/v biases, untied head, 8 query heads over 2 kv heads, llama3 rope scaling with a short original
        // context so all three frequency bands (kept, scaled, smoothed) occur.
        var config = new TeacherConfig
        {
            ModelType = "qwen2", VocabSize = 97, HiddenSize = 44, IntermediateSize = 78, NumLayers = 2, NumHeads = 8, NumKeyValueHeads = 2,
            HeadDim = 16, MaxPositions = 128, RopeTheta = 500000, RopeScalingType = "llama3", RopeScalingFactor = 8, RopeLowFreqFactor = 1,
            RopeHighFreqFactor = 4, RopeOriginalMaxPositions = 32, QkvBias = true, TieWordEmbeddings = false,
        };
        using var model = RandomModel(config);
        double worst = WorstStepDifference(model, [[5, 9, 13, 2, 40, 41], [7, 7], [90], [3, 1, 4, 1, 5], [8]], 40);
        Assert.True(worst < 1e-4, $"{worst:G3}");
    }

    [Fact]
    public void ManagedStepsHonourASlidingWindowAsTheTorchMaskDoes()
    {
        var config = new TeacherConfig
        {
            ModelType = "mistral", VocabSize = 66, HiddenSize = 32, IntermediateSize = 70, NumLayers = 2, NumHeads = 4, NumKeyValueHeads = 2,
            HeadDim = 6, MaxPositions = 64, SlidingWindow = 5, MlpBias = true, OutputProjectionBias = true,
        };
        using var model = RandomModel(config);
        double worst = WorstStepDifference(model, [[3, 4, 5, 6, 7, 8, 9], [10, 11]], 12);
        Assert.True(worst < 1e-4, $"{worst:G3}");
    }

    [SharedDataFact]
    public void GreedySequencesAreIdenticalOnBothPathsOnTheRealCheckpoint()
    {
        using var model = Stories();
        // llama2.c's greedy run from BOS (its golden is checked in TeacherGoldenTests, which now takes the managed path).
        var request = new GenerationRequest { PromptIds = [[1]], MaxNewTokens = 200, StopTokenIds = [1] };
        var managed = model.Generate(request).Sequences[0];
        var torchPath = model.Generate(new GenerationRequest { PromptIds = [[1]], MaxNewTokens = 200, StopTokenIds = [1], TorchDecode = true }).Sequences[0];
        Assert.True(managed.TokenIds.Length > 100);
        Assert.Equal(torchPath.TokenIds, managed.TokenIds);
        AssertClose(torchPath.TokenLogProbs, managed.TokenLogProbs);
    }

    [SharedDataFact]
    public void ManagedPaddedBatchWithASoftPromptEqualsTorchPerRow()
    {
        using var model = Stories();
        using var point3 = 0.3.ToScalar(); // held, not a temporary (HeldScalarTests)
        using var prefix = randn(3, model.Config.HiddenSize, generator: new Generator(9)).mul_(point3);
        string[] prompts = ["Once upon a time", "Lily", "One day, a big dog saw a ball in the park and"];
        var batched = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 24, PrefixEmbeds = prefix });
        for (int i = 0; i < prompts.Length; i++)
        {
            var single = model.Generate(new GenerationRequest { Prompts = [prompts[i]], MaxNewTokens = 24, PrefixEmbeds = prefix, TorchDecode = true }).Sequences[0];
            Assert.Equal(single.TokenIds, batched.Sequences[i].TokenIds);
            AssertClose(single.TokenLogProbs, batched.Sequences[i].TokenLogProbs);
        }
    }

    [SharedDataFact]
    public void SeededSamplesAreIdenticalOnBothPaths()
    {
        using var model = Stories();
        GenerationRequest Request(bool torchPath) => new()
        {
            Prompts = ["Once upon a time", "Tom"], MaxNewTokens = 40, Temperature = 1.0, TopK = 20, TopP = 0.9, RepetitionPenalty = 1.1, Seed = 42, TorchDecode = torchPath,
        };
        var managed = model.Generate(Request(false));
        var torchPath = model.Generate(Request(true));
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(torchPath.Sequences[i].TokenIds, managed.Sequences[i].TokenIds);
            AssertClose(torchPath.Sequences[i].TokenLogProbs, managed.Sequences[i].TokenLogProbs);
        }
    }

    [SharedDataFact]
    public void ManagedPathFollowsWeightsChangedByPretrainingBetweenCalls()
    {
        using var model = Stories(trainable: true);
        var request = new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 30, StopTokenIds = [] };
        var before = model.Generate(request).Sequences[0];

        var tokens = TeacherPretrainingTests.Reviews(40).SelectMany(t => model.Tokenizer!.Encode(t, addBos: true)).ToArray();
        new TeacherPretrainer(new MLContext(seed: 1), new TeacherPretrainerOptions { Steps = 3, BatchSize = 4, SequenceLength = 32, WarmupSteps = 0, LearningRate = 1e-2 })
            .Train(model, tokens);

        var after = model.Generate(request).Sequences[0];
        var torchAfter = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 30, StopTokenIds = [], TorchDecode = true }).Sequences[0];
        Assert.NotEqual(before.TokenLogProbs, after.TokenLogProbs);
        Assert.Equal(torchAfter.TokenIds, after.TokenIds);
        AssertClose(torchAfter.TokenLogProbs, after.TokenLogProbs);
        Assert.True(WorstStepDifference(model, [model.Tokenizer!.Encode("Lily", addBos: true)], 20) < 1e-4);
    }

    [SharedDataFact]
    public void SplittingMatricesAcrossThreadsGivesTheSameLogitsBitForBit()
    {
        using var model = Stories();
        var tok = model.Tokenizer!;
        int[][] prompts = [tok.Encode("Once upon a time", addBos: true), tok.Encode("Lily", addBos: true), [1], [1, 403], [1, 407]];
        var serial = Prefilled(model, prompts, null, 12);
        var split = Prefilled(model, prompts, null, 12);
        serial.Threads = 1;
        split.Threads = 3; split.ParallelMinimumFloats = 0;   // every matrix, in three uneven parts
        using var scope = NewDisposeScope();
        var next = new long[prompts.Length];
        for (int step = 0; step < 12; step++)
        {
            var a = serial.Step(next).data<float>().ToArray();
            var b = split.Step(next).data<float>().ToArray();
            Assert.Equal(a, b);
            for (int r = 0; r < next.Length; r++) next[r] = Array.IndexOf(a, a.Skip(r * 512).Take(512).Max(), r * 512) - r * 512;
        }
    }

    [SharedDataFact]
    public void ThePathIsChosenOnlyWhereItApplies()
    {
        using var stories = Stories();
        Assert.NotNull(ManagedLlamaDecoder.TryCreate(stories.Module, ManagedLlamaDecoder.MaxBatch, 16));
        Assert.Null(ManagedLlamaDecoder.TryCreate(stories.Module, ManagedLlamaDecoder.MaxBatch + 1, 16));
        using var gpt2 = TeacherModel.Load(TeacherGoldenTests.Models("hf-tiny-random-gpt2"));
        Assert.Null(ManagedLlamaDecoder.TryCreate(gpt2.Module, 1, 16));
        using var half = TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K", "stories260K.bin"), new TeacherLoadOptions { DType = ScalarType.BFloat16 });
        Assert.Null(ManagedLlamaDecoder.TryCreate(half.Module, 1, 16));
    }
}
