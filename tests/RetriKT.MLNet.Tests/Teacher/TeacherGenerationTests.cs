using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>Generation, scoring and the differentiable inputs_embeds path, on the real stories260K and tiny GPT-2.</summary>
public class TeacherGenerationTests
{
    private static TeacherModel Stories() => TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K", "stories260K.bin"));

    [SharedDataFact]
    public void KvCacheAndFullRecomputeGiveIdenticalGreedyTokensAndLogProbs()
    {
        foreach (var load in new Func<TeacherModel>[] { Stories, () => TeacherModel.Load(TeacherGoldenTests.Models("hf-tiny-random-gpt2")) })
        {
            using var model = load();
            var prompts = new[] { "Once upon a time", "The dog" };
            var cached = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 24, UseKvCache = true });
            var full = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 24, UseKvCache = false });
            for (int i = 0; i < prompts.Length; i++)
            {
                Assert.Equal(full.Sequences[i].TokenIds, cached.Sequences[i].TokenIds);
                Assert.True(full.Sequences[i].TokenIds.Length > 0);
                for (int t = 0; t < full.Sequences[i].TokenLogProbs.Length; t++)
                    Assert.Equal(full.Sequences[i].TokenLogProbs[t], cached.Sequences[i].TokenLogProbs[t], 3);
            }
        }
    }

    /// <summary>
    /// A fired token stops the call with OperationCanceledException (the TeacherServer relies on it when every client of a
    /// call has left); the model is left as it was: the next call, with a live token, gives what a call without one gives.
    /// </summary>
    [SharedDataFact]
    public void ACancelledGenerationThrowsAndLeavesTheModelAsItWas()
    {
        using var model = Stories();
        var greedy = model.Generate(new GenerationRequest { Prompts = ["Once upon a time", "Tom"], MaxNewTokens = 40 });
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => model.Generate(new GenerationRequest { Prompts = ["Once upon a time", "Tom"], MaxNewTokens = 40, Cancellation = cancelled.Token }));
        using var live = new CancellationTokenSource();
        var again = model.Generate(new GenerationRequest { Prompts = ["Once upon a time", "Tom"], MaxNewTokens = 40, Cancellation = live.Token });
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(greedy.Sequences[i].TokenIds, again.Sequences[i].TokenIds);
            Assert.Equal(greedy.Sequences[i].TokenLogProbs, again.Sequences[i].TokenLogProbs);
        }
    }

    [SharedDataFact]
    public void BatchedLeftPaddedGenerationEqualsPerRowGeneration()
    {
        using var model = Stories();
        var prompts = new[] { "Once upon a time", "Lily", "One day, a big dog saw a ball in the park and" };
        var batched = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20 });
        for (int i = 0; i < prompts.Length; i++)
        {
            var single = model.Generate(new GenerationRequest { Prompts = [prompts[i]], MaxNewTokens = 20 });
            Assert.Equal(single.Sequences[0].TokenIds, batched.Sequences[i].TokenIds);
            Assert.Equal(single.Sequences[0].Text, batched.Sequences[i].Text);
        }
    }

    /// <summary>
    /// A short prompt batched with one that nearly fills the context generates what it generates alone: each row is capped
    /// by its own room. Before, every row was cut to the longest row's room (30 tokens asked, 12 given), and a longer row
    /// that stopped early would have been fed past GPT-2's position table while the short one ran on.
    /// </summary>
    [SharedDataFact]
    public void AShortRowBatchedWithOneAtTheContextsEndGeneratesWhatItGeneratesAlone()
    {
        foreach (var load in new Func<TeacherModel>[] { Stories, () => TeacherModel.Load(TeacherGoldenTests.Models("hf-tiny-random-gpt2")) })
        {
            using var model = load();
            bool bos = model.Config.Architecture == TeacherArchitecture.Llama;
            int room = 12, longLength = model.Config.MaxPositions - room;
            var longIds = model.Tokenizer!.Encode(string.Concat(Enumerable.Repeat("Once upon a time there was a little girl. ", 80)), bos)[..longLength];
            var shortIds = model.Tokenizer.Encode("Tom and his dog", bos);
            foreach (var (useCache, torchDecode) in new[] { (true, false), (true, true), (false, true) })
            {
                GenerationRequest Request(int[][] rows) =>
                    new() { PromptIds = rows, MaxNewTokens = 30, StopTokenIds = [], UseKvCache = useCache, TorchDecode = torchDecode };
                var batched = model.Generate(Request([longIds, shortIds])).Sequences;
                var shortAlone = model.Generate(Request([shortIds])).Sequences[0];
                var longAlone = model.Generate(Request([longIds])).Sequences[0];
                Assert.Equal((30, "length"), (shortAlone.TokenIds.Length, shortAlone.FinishReason));
                Assert.Equal(shortAlone.TokenIds, batched[1].TokenIds);
                Assert.Equal(shortAlone.Text, batched[1].Text);
                for (int t = 0; t < shortAlone.TokenLogProbs.Length; t++) Assert.Equal(shortAlone.TokenLogProbs[t], batched[1].TokenLogProbs[t], 1e-4);
                Assert.Equal((room, "length"), (batched[0].TokenIds.Length, batched[0].FinishReason));
                Assert.Equal(longAlone.TokenIds, batched[0].TokenIds);
            }
        }
    }

    /// <summary>
    /// A sliding window spans positions, not slots: a short row after a soft prompt, padded next to a long one, sees the
    /// soft prompt as it does alone (the padding between them takes no position), in generation on all three paths and in
    /// scoring. Before, the window counted the padding slots, and the short row lost the soft prompt behind its neighbour's
    /// length. The real stories260K weights, with Mistral's window set to 8 positions.
    /// </summary>
    [SharedDataFact]
    public void ASlidingWindowSpansPositionsSoAPaddedRowAfterASoftPromptIsItsOwn()
    {
        using var dir = new TempDir();
        var source = TeacherGoldenTests.Models("llama2c-stories260K-hf");
        File.Copy(Path.Combine(source, "model.safetensors"), dir.File("model.safetensors"));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        config["model_type"] = "mistral"; config["use_sliding_window"] = true; config["sliding_window"] = 8;
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        File.Copy(TeacherGoldenTests.Models("llama2c-stories260K", "tok512.bin"), dir.File("tokenizer.bin"));
        using var model = TeacherModel.Load(dir.Path);
        Assert.Equal(8, model.Config.SlidingWindow);
        using var scope = NewDisposeScope();
        using var half = 0.5.ToScalar(); // held, not a temporary (HeldScalarTests)
        var soft = randn(new long[] { 3, model.Config.HiddenSize }, generator: new Generator(3)).mul(half);
        int[][] prompts = [model.Tokenizer!.Encode("Once upon a time there was a little girl named Lily", true), model.Tokenizer.Encode("Tom", true)];
        foreach (var (useCache, torchDecode) in new[] { (true, false), (true, true), (false, true) })
        {
            var batched = model.Generate(new GenerationRequest { PromptIds = prompts, PrefixEmbeds = soft, MaxNewTokens = 12, UseKvCache = useCache, TorchDecode = torchDecode });
            for (int i = 0; i < prompts.Length; i++)
            {
                var alone = model.Generate(new GenerationRequest { PromptIds = [prompts[i]], PrefixEmbeds = soft, MaxNewTokens = 12, UseKvCache = false, TorchDecode = true }).Sequences[0];
                Assert.Equal(alone.TokenIds, batched.Sequences[i].TokenIds);
                for (int t = 0; t < alone.TokenLogProbs.Length; t++) Assert.Equal(alone.TokenLogProbs[t], batched.Sequences[i].TokenLogProbs[t], 1e-4);
            }
        }
        int[][] continuations = [[261, 262], [263, 264]];
        var scored = model.ContinuationLogLikelihood(prompts, continuations, soft).data<float>().ToArray();
        for (int i = 0; i < prompts.Length; i++)
            Assert.Equal(model.ContinuationLogLikelihood([prompts[i]], [continuations[i]], soft).item<float>(), scored[i], 1e-4);
    }

    /// <summary>
    /// Stop sequences are read in the decoded output, so a teacher without a tokenizer cannot honour them: the call is
    /// refused with one line, where before the stops were skipped and every row ran on to its token limit as if none
    /// had been asked for. The real stories260K HF folder, which ships no tokenizer.
    /// </summary>
    [SharedDataFact]
    public void StopSequencesOnATeacherWithoutATokenizerAreRefused()
    {
        using var model = TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K-hf"));
        Assert.Null(model.Tokenizer);
        var error = Assert.Throws<InvalidOperationException>(() =>
            model.Generate(new GenerationRequest { PromptIds = [[1, 403, 261, 275]], MaxNewTokens = 8, StopSequences = ["."] }));
        Assert.Equal("StopSequences are looked for in the decoded output, but this teacher has no tokenizer; load it with " +
                     "TeacherLoadOptions.TokenizerPath, or stop on StopTokenIds.", error.Message);
        Assert.Equal(8, model.Generate(new GenerationRequest { PromptIds = [[1, 403, 261, 275]], MaxNewTokens = 8, StopTokenIds = [] }).Sequences[0].TokenIds.Length);
    }

    [SharedDataFact]
    public void SamplingIsDeterministicGivenSeedAndRespectsTopK()
    {
        using var model = Stories();
        var request = new GenerationRequest { Prompts = ["Once upon a time", "Tom"], MaxNewTokens = 30, Temperature = 1.0, TopK = 20, TopP = 0.9, RepetitionPenalty = 1.1, Seed = 42 };
        var a = model.Generate(request);
        var b = model.Generate(request);
        var c = model.Generate(new GenerationRequest { Prompts = request.Prompts, MaxNewTokens = 30, Temperature = 1.0, TopK = 20, TopP = 0.9, RepetitionPenalty = 1.1, Seed = 7 });
        Assert.Equal(a.Sequences[0].TokenIds, b.Sequences[0].TokenIds);
        Assert.Equal(a.Sequences[1].TokenIds, b.Sequences[1].TokenIds);
        Assert.NotEqual(a.Sequences[0].TokenIds.Concat(a.Sequences[1].TokenIds), c.Sequences[0].TokenIds.Concat(c.Sequences[1].TokenIds));

        // Top-k = 1 is greedy.
        var topOne = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 15, Temperature = 0.7, TopK = 1, Seed = 3 });
        var greedy = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 15 });
        Assert.Equal(greedy.Sequences[0].TokenIds, topOne.Sequences[0].TokenIds);
    }

    /// <summary>
    /// A tiny temperature samples greedy's tokens, as its limit does, each with a log-probability of 0 (probability 1 at
    /// that temperature). Logits divided by 1e-40 overflowed float32, and softmax made NaN of them: the call failed.
    /// </summary>
    /// <summary>
    /// Rows at temperatures of their own share one call (the TeacherServer batches requests that each bring theirs): a row
    /// at 0 is greedy's, with greedy's log-probabilities, and so is one at a tiny temperature; rows that all have one
    /// temperature sample exactly as Temperature does. A list of the wrong length is refused in one line.
    /// </summary>
    [SharedDataFact]
    public void RowTemperaturesSampleEachRowAtItsOwn()
    {
        using var model = Stories();
        var prompts = new[] { "Once upon a time", "Tom", "Once upon a time" };
        var greedy = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20 });
        var mixed = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20, RowTemperatures = [0, 1.0, 1e-30], Seed = 4 });
        Assert.Equal(greedy.Sequences[0].TokenIds, mixed.Sequences[0].TokenIds);
        Assert.Equal(greedy.Sequences[0].TokenLogProbs, mixed.Sequences[0].TokenLogProbs);
        Assert.Equal(greedy.Sequences[2].TokenIds, mixed.Sequences[2].TokenIds);
        Assert.All(mixed.Sequences[2].TokenLogProbs, p => Assert.Equal(0f, p));
        Assert.True(mixed.Sequences[1].TokenIds.Length > 0);

        var shared = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20, Temperature = 0.8, Seed = 9 });
        var sameEach = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20, RowTemperatures = [0.8, 0.8, 0.8], Seed = 9 });
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(shared.Sequences[i].TokenIds, sameEach.Sequences[i].TokenIds);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => model.Generate(new GenerationRequest { Prompts = prompts, RowTemperatures = [0.5, 1] }));
        Assert.StartsWith("RowTemperatures needs one finite temperature >= 0 per row (3 rows), found [0.5, 1].", error.Message);
    }

    [SharedDataFact]
    public void ATinyTemperatureSamplesGreedysTokensWithFiniteLogProbs()
    {
        using var model = Stories();
        string[] prompts = ["Once upon a time", "Tom"];
        var greedy = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20 });
        foreach (var temperature in new[] { 1e-40, 1e-300, double.Epsilon })
            foreach (var torchDecode in new[] { false, true })
            {
                var tiny = model.Generate(new GenerationRequest { Prompts = prompts, MaxNewTokens = 20, Temperature = temperature, TorchDecode = torchDecode, Seed = 2 });
                for (int i = 0; i < prompts.Length; i++)
                {
                    Assert.Equal(greedy.Sequences[i].TokenIds, tiny.Sequences[i].TokenIds);
                    Assert.All(tiny.Sequences[i].TokenLogProbs, p => Assert.True(p == 0, $"T {temperature}, torch {torchDecode}: log-prob {p}"));
                }
            }
    }

    [SharedDataFact]
    public void ReturnedLogProbsEqualTheForwardPassOverTheSequence()
    {
        using var model = Stories();
        var row = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 10, Temperature = 1, Seed = 5 }).Sequences[0];
        int[] all = [.. row.PromptIds, .. row.TokenIds];
        var score = model.ContinuationLogLikelihood([row.PromptIds], [row.TokenIds]);
        using (score) Assert.Equal(row.TokenLogProbs.Sum(), score.item<float>(), 3);
        Assert.Equal(all.Length, row.PromptIds.Length + 10);
    }

    [SharedDataFact]
    public void SoftPromptForwardPassesGradientsToTheEmbeddingsAndGenerationUsesThePrefix()
    {
        using var model = Stories();
        Assert.False(model.RequiresGrad);
        using var scope = NewDisposeScope();
        // Held, not temporaries: a Scalar made of a number in the call may be freed by its finalizer while torch reads it (HeldScalarTests).
        using Scalar tenth = 0.1, fifty = 50, five = 5;
        var soft = randn(4, model.Config.HiddenSize).mul(tenth).requires_grad_(true);
        var ids = tensor(model.Tokenizer!.Encode("Once upon a time", addBos: true).Select(i => (long)i).ToArray()).unsqueeze(0);
        var tokens = model.Embed(ids);
        var embeds = cat([soft.unsqueeze(0), tokens], 1);
        var mask = ones(1, embeds.shape[1], ScalarType.Int64);
        var output = model.Forward(embeds, mask, returnHiddenStates: true);
        Assert.Equal(new long[] { 1, embeds.shape[1], model.Config.VocabSize }, output.Logits.shape);
        Assert.Equal(new long[] { 1, embeds.shape[1], model.Config.HiddenSize }, output.HiddenStates!.shape);
        output.Logits[0, -1].log_softmax(-1)[403].backward();
        Assert.NotNull(soft.grad);
        Assert.True(soft.grad!.abs().sum().item<float>() > 0);
        Assert.True(model.NamedParameters().All(p => p.Parameter.grad is null));

        // Scoring with the soft prompt is differentiable too, and a prefix changes what is generated / scored.
        var ll = model.ContinuationLogLikelihood([[1]], [[403, 407]], soft);
        ll.sum().backward();
        var withPrefix = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 8, PrefixEmbeds = soft.detach().mul(fifty) });
        var without = model.Generate(new GenerationRequest { Prompts = ["Once upon a time"], MaxNewTokens = 8 });
        Assert.NotEqual(without.Sequences[0].TokenLogProbs, withPrefix.Sequences[0].TokenLogProbs);

        // Batched generation with a shared prefix equals per-row generation with it.
        var prefix = soft.detach().mul(five);
        var rows = model.Generate(new GenerationRequest { Prompts = ["Lily", "Once upon a time"], MaxNewTokens = 10, PrefixEmbeds = prefix });
        var single = model.Generate(new GenerationRequest { Prompts = ["Lily"], MaxNewTokens = 10, PrefixEmbeds = prefix });
        Assert.Equal(single.Sequences[0].TokenIds, rows.Sequences[0].TokenIds);
    }

    [SharedDataFact]
    public void LogitsToKeepGivesTheLastSlotsLogitsAndRightPaddingNeedsNoMask()
    {
        using var model = Stories();
        using var scope = NewDisposeScope();
        // Two rows, the second right-padded by three slots (as PPO re-scores responses of different lengths).
        var a = model.Tokenizer!.Encode("Once upon a time there was a dog", addBos: true);
        var b = model.Tokenizer!.Encode("Lily saw a cat", addBos: true);
        int width = Math.Max(a.Length, b.Length);
        long[] Row(int[] ids) => [.. ids.Select(i => (long)i), .. Enumerable.Repeat(0L, width - ids.Length)];
        var embeds = model.Embed(tensor(Row(a).Concat(Row(b)).ToArray(), [2, width]));
        var mask = tensor(Enumerable.Range(0, 2 * width).Select(i => (long)(i % width < (i < width ? a.Length : b.Length) ? 1 : 0)).ToArray(), [2, width]);
        var full = model.Forward(embeds, mask).Logits;

        var kept = model.Forward(embeds, mask, logitsToKeep: 4).Logits;
        Assert.Equal(new long[] { 2, 4, model.Config.VocabSize }, kept.shape);
        float keptGap = full.narrow(1, width - 4, 4).sub(kept).abs().max().item<float>();
        Assert.True(keptGap < 1e-5f, $"logitsToKeep 4 differs from the full pass's last 4 slots by {keptGap}.");

        // Without the mask, every real slot of the right-padded row reads the same logits (pads only follow it).
        var unmasked = model.Forward(embeds).Logits;
        float realGap = full[1].narrow(0, 0, b.Length).sub(unmasked[1].narrow(0, 0, b.Length)).abs().max().item<float>();
        Assert.True(realGap < 1e-4f, $"right padding without a mask moved a real slot's logits by {realGap}.");
        Assert.True(full[0].sub(unmasked[0]).abs().max().item<float>() < 1e-4f);

        var tooMany = Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(embeds, mask, logitsToKeep: width + 1));
        Assert.Contains($"logitsToKeep must be in [1, {width}]", tooMany.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Forward(embeds, mask, logitsToKeep: 0));
    }

    [SharedDataFact]
    public void ScoreContinuationsRanksTheLikelyEndingHigher()
    {
        using var model = Stories();
        var scores = model.ScoreContinuations(
            ["Once upon a time, there was a little", "Once upon a time, there was a little", "Lily went to the"],
            [" girl", " tax", " park"]);
        Assert.Equal(3, scores.Length);
        Assert.True(scores[0] > scores[1] + 2, $"girl {scores[0]} vs tax {scores[1]}");
        Assert.All(scores, s => Assert.True(s < 0));
        // Batched equals one at a time.
        var alone = model.ScoreContinuations(["Lily went to the"], [" park"]);
        Assert.Equal(alone[0], scores[2], 3);
    }
}
