using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// Generation and scoring semantics against their reference definitions (Hugging Face / lm-eval): which tokens a
/// continuation is, which slot predicts it, and which tokens top-p keeps.
/// </summary>
public class DecodingSemanticsTests(ITestOutputHelper output)
{
    private static TeacherModel Stories() => TeacherModel.Load(TeacherGoldenTests.Models("llama2c-stories260K", "stories260K.bin"));

    /// <summary>
    /// A word scored after a prefix is the tokens that word becomes in the whole text. SentencePiece puts a dummy-prefix
    /// space in front of every encoded text, so " girl" encoded alone is ["▁", "▁girl"]: the teacher was scored on a
    /// lone space token and then on "girl" after a double space, a text it never saw.
    /// </summary>
    [SharedDataFact]
    public void AContinuationAfterAPrefixIsScoredAsTheTokensOfTheWholeTextOnSentencePiece()
    {
        using var model = Stories();
        var tokenizer = model.Tokenizer!;
        const string prefix = "Once upon a time there was a little";
        foreach (var word in new[] { " girl", " dog named Max" })
        {
            var prefixIds = tokenizer.Encode(prefix, addBos: true);
            var whole = tokenizer.Encode(prefix + word, addBos: true);
            Assert.Equal(prefixIds, whole[..prefixIds.Length]);
            var continuation = whole[prefixIds.Length..];
            using var expected = model.ContinuationLogLikelihood([prefixIds], [continuation]);
            double score = model.ScoreContinuations([prefix], [word])[0];
            output.WriteLine($"'{word}': whole-text ids [{string.Join(",", continuation)}] log p {expected.item<float>():F4}; ScoreContinuations {score:F4}");
            Assert.Equal(expected.item<float>(), score, 3);
        }
        // A text with no prefix is the start of a text: there the dummy-prefix space belongs.
        var start = tokenizer.Encode("The dog", addBos: true);
        using var fromStart = model.ContinuationLogLikelihood([start[..1]], [start[1..]]);
        Assert.Equal(fromStart.item<float>(), model.ScoreContinuations([""], ["The dog"])[0], 3);
    }

    /// <summary>The verbalizer's words are continuations too: one-token words take the one-pass path and score as such.</summary>
    [SharedDataFact]
    public void VerbalizerWordsThatAreOneTokenInTheTextTakeTheOneTokenPathOnSentencePiece()
    {
        using var model = Stories();
        var template = new TaskTemplate
        {
            Name = "mood", ClassificationFormat = "{text} The dog was{label}",
            Verbalizer = new Dictionary<string, string> { ["0"] = " happy", ["1"] = " big" },
        };
        var classifier = new VerbalizerClassifier(model, template, ["0", "1"], calibrate: false);
        Assert.True(classifier.SingleTokenWords, "' happy' and ' big' are one token each inside a text");
        var p = classifier.Probabilities([("Once upon a time", null)])[0];
        var next = model.ScoreNextTokens(["Once upon a time The dog was"],
            [model.Tokenizer!.Encode("a happy")[^1], model.Tokenizer.Encode("a big")[^1]])[0];
        double expected = Math.Exp(next[0]) / (Math.Exp(next[0]) + Math.Exp(next[1]));
        output.WriteLine($"p(happy) {p[0]:F4}, from the next-token log-probs {expected:F4}");
        Assert.Equal(expected, p[0], 4);
    }

    /// <summary>
    /// Rows with an empty prefix after a soft prompt, padded together: the first continuation token is predicted by the
    /// soft prompt's last slot, not by a padding slot (GPT-2 adds no BOS, so stage-1 targets have empty prefixes).
    /// </summary>
    [SharedDataFact]
    public void EmptyPrefixRowsAfterASoftPromptScoreTheSameBatchedAsAlone()
    {
        using var model = TeacherModel.Load(TeacherGoldenTests.Models("hf-tiny-random-gpt2"));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var soft = randn(new long[] { 3, model.Config.HiddenSize }, generator: new Generator(5)).mul(HeldScalars.Half);
        int[][] prefixes = [[], [], [17]];
        int[][] continuations = [[11, 22, 33, 44], [55], [66, 77]];
        var batched = model.ContinuationLogLikelihood(prefixes, continuations, soft).data<float>().ToArray();
        for (int i = 0; i < prefixes.Length; i++)
        {
            float alone = model.ContinuationLogLikelihood([prefixes[i]], [continuations[i]], soft).item<float>();
            output.WriteLine($"row {i}: batched {batched[i]:F5}, alone {alone:F5}");
            Assert.Equal(alone, batched[i], 3);
        }
    }

    /// <summary>
    /// Generation from a soft prompt alone (an empty prompt row) batched with a row that has prompt ids: its first token
    /// comes from the soft prompt's last slot, as when it is generated alone, on the torch and the managed path.
    /// </summary>
    [SharedDataFact]
    public void AnEmptyPromptRowAfterASoftPromptGeneratesTheSameBatchedAsAlone()
    {
        using var model = Stories();
        using var scope = NewDisposeScope();
        var soft = randn(new long[] { 3, model.Config.HiddenSize }, generator: new Generator(9)).mul(HeldScalars.Half);
        int[][] prompts = [[], [1, 403, 261, 275]];
        foreach (bool torchDecode in new[] { true, false })
        {
            var batched = model.Generate(new GenerationRequest { PromptIds = prompts, PrefixEmbeds = soft, MaxNewTokens = 12, TorchDecode = torchDecode });
            for (int i = 0; i < prompts.Length; i++)
            {
                var alone = model.Generate(new GenerationRequest { PromptIds = [prompts[i]], PrefixEmbeds = soft, MaxNewTokens = 12, TorchDecode = torchDecode }).Sequences[0];
                output.WriteLine($"torch {torchDecode} row {i}: batched [{string.Join(",", batched.Sequences[i].TokenIds)}], alone [{string.Join(",", alone.TokenIds)}]");
                Assert.Equal(alone.TokenIds, batched.Sequences[i].TokenIds);
                Assert.Equal(alone.TokenLogProbs[0], batched.Sequences[i].TokenLogProbs[0], 3);
            }
        }
    }

    /// <summary>
    /// A text scored with no prefix text on a teacher that adds no BOS (GPT-2) is conditioned on its end-of-text token,
    /// as lm-eval does, instead of failing: the fluency filter scores whole samples so, and threw for every GPT-2 teacher.
    /// </summary>
    [SharedDataFact]
    public void AContinuationWithNoPrefixTextIsScoredAfterEndOfTextOnGpt2()
    {
        using var model = TeacherModel.Load(TeacherGoldenTests.Models("hf-tiny-random-gpt2"));
        var tokenizer = model.Tokenizer!;
        int start = tokenizer.EosId!.Value;
        using var expected = model.ContinuationLogLikelihood([[start]], [tokenizer.Encode("The dog ran.")]);
        Assert.Equal(expected.item<float>(), model.ScoreContinuations([""], ["The dog ran."])[0], 3);
        var next = model.ScoreNextTokens([""], [tokenizer.Encode("The")[0]])[0][0];
        using var first = model.ContinuationLogLikelihood([[start]], [[tokenizer.Encode("The")[0]]]);
        Assert.Equal(first.item<float>(), next, 3);
        var fluency = new RetriKT.MLNet.Knowledge.Extraction.FluencyFilter(model, TaskTemplates.Sst2, [("a fine film", null), ("dull", null)], 0);
        Assert.True(double.IsFinite(fluency.Threshold), $"threshold {fluency.Threshold}");
    }

    /// <summary>
    /// A stop sequence is looked for in the output as it reads after the prompt: with SentencePiece, the first generated
    /// piece's leading space counts (" there" after "Once upon a time," stops at once; before, generation ran on to the
    /// token limit and returned the stop in its text). Stops spanning tokens still stop, and the text ends after the stop.
    /// </summary>
    [SharedDataFact]
    public void AStopSequenceWithTheFirstPiecesLeadingSpaceStopsOnSentencePiece()
    {
        using var model = Stories();
        GeneratedSequence Run(string stop) => model.Generate(new GenerationRequest { Prompts = ["Once upon a time,"], MaxNewTokens = 12, StopSequences = [stop] }).Sequences[0];
        var plain = model.Generate(new GenerationRequest { Prompts = ["Once upon a time,"], MaxNewTokens = 12 }).Sequences[0];
        Assert.StartsWith("there was a", plain.Text);
        var atStart = Run(" there");
        Assert.Equal(("stop_sequence", 1, "there"), (atStart.FinishReason, atStart.TokenIds.Length, atStart.Text));
        var spanning = Run("re was a");
        Assert.Equal(("stop_sequence", 3, "there was a"), (spanning.FinishReason, spanning.TokenIds.Length, spanning.Text));
        var later = Run(" was");
        Assert.Equal(("stop_sequence", 2, "there was"), (later.FinishReason, later.TokenIds.Length, later.Text));
    }

    /// <summary>
    /// Top-p keeps the smallest set of most probable tokens whose mass reaches p (HF: a token goes when the mass before it
    /// is already >= p). Two tokens of 0.5 each with p = 0.5: the first alone reaches p.
    /// </summary>
    [Fact]
    public void TopPKeepsTheSmallestSetWhoseMassReachesP()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0f, 0f, -1000f, 2f, 2f, -1000f }, new long[] { 2, 3 });
        var kept = Sampler.TopP(logits, 0.5).isfinite().sum(1).data<long>().ToArray();
        Assert.Equal(new long[] { 1, 1 }, kept);
        // Just above the first token's mass, the second joins.
        kept = Sampler.TopP(logits, 0.5001).isfinite().sum(1).data<long>().ToArray();
        Assert.Equal(new long[] { 2, 2 }, kept);
        // p = 1 keeps everything, also tokens of probability 0.
        Assert.Equal(6, Sampler.TopP(logits, 1).isfinite().sum().item<long>());
    }

    /// <summary>
    /// A p too small for float32 (an OpenAI client may send top_p 1e-300) still keeps the most probable token: it
    /// compared as 0, which the empty mass before the first token reaches, so every token went and sampling failed.
    /// </summary>
    [Fact]
    public void TopPBelowFloat32RangeKeepsTheMostProbableToken()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new float[] { 0f, 1f, -1f, 2f, 3f, 1f }, new long[] { 2, 3 });
        var kept = Sampler.TopP(logits, 1e-300);
        Assert.Equal(new long[] { 1, 1 }, kept.isfinite().sum(1).data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1 }, kept.argmax(-1).data<long>().ToArray());
        Assert.Equal(new long[] { 1, 1 }, kept.softmax(-1).multinomial(1).squeeze(1).data<long>().ToArray());
    }
}
