using System.Text.Json;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>Parity with published references: llama2.c run.c (stories260K), its HF conversion, HF tiny-random-gpt2, tokenizers.</summary>
public class TeacherGoldenTests
{
    internal static string Models(params string[] parts) => SharedData.Path(["models", .. parts]);

    internal static JsonElement Golden(string folder) =>
        JsonDocument.Parse(File.ReadAllText(Models(folder, "golden.json"))).RootElement;

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
    private static float[] Floats(JsonElement e) => e.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray();

    private static float[] LastLogits(TeacherModel model, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var embeds = model.Embed(tensor(ids.Select(i => (long)i).ToArray(), new long[] { 1, ids.Length }));
        var logits = model.Forward(embeds).Logits;
        return logits[0, ids.Length - 1].data<float>().ToArray();
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        double worst = expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max();
        Assert.True(worst < tolerance, $"max |Δlogit| = {worst:G3} > {tolerance}");
    }

    [SharedDataFact]
    public void Llama2cStories260KReproducesRunCLogitsAndGreedyText()
    {
        var golden = Golden("llama2c-stories260K-golden");
        var derived = golden.GetProperty("derived_with_upstream_run_c");
        using var model = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        Assert.Equal(512, model.Config.VocabSize);
        Assert.Equal("llama2c", model.Tokenizer!.Kind);

        AssertClose(Floats(derived.GetProperty("logits_pos0_after_bos").GetProperty("values")), LastLogits(model, [1]), 1e-4);
        AssertClose(Floats(derived.GetProperty("logits_last_prompt_position_once_upon_a_time").GetProperty("values")),
            LastLogits(model, [1, 403, 407, 261, 378]), 1e-4);

        // llama2.c test_all.py: greedy from BOS, 200 positions, stop when BOS is produced.
        var expectedIds = Ints(derived.GetProperty("greedy_from_bos_200_steps_ids"));
        var result = model.Generate(new GenerationRequest { PromptIds = [[1]], MaxNewTokens = 200, StopTokenIds = [1] });
        var row = result.Sequences[0];
        Assert.Equal(expectedIds.Skip(1).ToArray(), row.TokenIds);
        var expectedText = golden.GetProperty("published")[0].GetProperty("expected_stdout_minus_final_newline").GetString();
        Assert.Equal(expectedText, row.Text);
        Assert.All(row.TokenLogProbs, lp => Assert.True(lp <= 0 && float.IsFinite(lp)));

        // Tokenizer: run.c encode(..., bos=1) goldens, including byte fallback.
        foreach (var c in derived.GetProperty("encode_with_bos").EnumerateArray())
            Assert.Equal(Ints(c.GetProperty("ids")), model.Tokenizer.Encode(c.GetProperty("text").GetString()!, addBos: true));
    }

    [SharedDataFact]
    public void HuggingFaceLlamaConversionGivesTheSameLogitsAndIds()
    {
        var golden = Golden("llama2c-stories260K-hf");
        using var hf = TeacherModel.Load(Models("llama2c-stories260K-hf"));
        Assert.Null(hf.Tokenizer);
        Assert.Equal(4, hf.Config.NumKeyValueHeads);
        AssertClose(Floats(golden.GetProperty("logits_pos0_after_bos").GetProperty("values")), LastLogits(hf, [1]), 1e-4);
        var prompt = Ints(golden.GetProperty("greedy_once_upon_a_time_64_positions").GetProperty("prompt_ids"));
        AssertClose(Floats(golden.GetProperty("logits_last_prompt_position_once_upon_a_time").GetProperty("values")), LastLogits(hf, prompt), 1e-4);

        var all = Ints(golden.GetProperty("greedy_once_upon_a_time_64_positions").GetProperty("all_ids"));
        var gen = hf.Generate(new GenerationRequest { PromptIds = [prompt], MaxNewTokens = all.Length - prompt.Length, StopTokenIds = [1] });
        Assert.Equal(all.Skip(prompt.Length).ToArray(), gen.Sequences[0].TokenIds);

        // Same weights through both loaders → same logits for a whole sequence.
        using var bin = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var ids = tensor(all.Select(i => (long)i).ToArray(), new long[] { 1, all.Length });
        var a = hf.Forward(hf.Embed(ids)).Logits;
        var b = bin.Forward(bin.Embed(ids)).Logits;
        Assert.True(a.sub(b).abs().max().item<float>() < 1e-4);
    }

    [SharedDataFact]
    public void TinyRandomGpt2MatchesTransformersGoldens()
    {
        var golden = Golden("hf-tiny-random-gpt2");
        using var model = TeacherModel.Load(Models("hf-tiny-random-gpt2"));
        Assert.Equal(TeacherArchitecture.Gpt2, model.Config.Architecture);
        var derived = golden.GetProperty("derived_by_helper");
        foreach (var c in derived.GetProperty("encode").EnumerateArray())
            Assert.Equal(Ints(c.GetProperty("ids")), model.Tokenizer!.Encode(c.GetProperty("text").GetString()!));
        var prompt = model.Tokenizer!.Encode("Hello I believe in");

        var first8 = Floats(derived.GetProperty("logits_last_position_hello_i_believe_in_first8"));
        AssertClose(first8, LastLogits(model, prompt).Take(8).ToArray(), 1e-5);

        // pipeline('text-generation')("Hello I believe in"): greedy to max_length 20.
        var greedy = derived.GetProperty("greedy")[0];
        var result = model.Generate(new GenerationRequest { Prompts = ["Hello I believe in"], MaxNewTokens = 20 - prompt.Length });
        Assert.Equal(Ints(greedy.GetProperty("all_ids")).Skip(prompt.Length).ToArray(), result.Sequences[0].TokenIds);
        var published = golden.GetProperty("published");
        Assert.Equal(published[0].GetProperty("expected_generated_text").GetString(), "Hello I believe in" + result.Sequences[0].Text);

        var stopped = model.Generate(new GenerationRequest { Prompts = ["Hello I believe in"], MaxNewTokens = 12, StopSequences = [" fe"] });
        Assert.Equal(published[0].GetProperty("with_stop_sequence_' fe'").GetString(), "Hello I believe in" + stopped.Sequences[0].Text);
        Assert.Equal("stop_sequence", stopped.Sequences[0].FinishReason);

        // generate(eos_token_id=873): 13 tokens in total.
        var dog = model.Tokenizer.Encode("Hello, my dog is cute and");
        var eos = model.Generate(new GenerationRequest { PromptIds = [dog], MaxNewTokens = 20 - dog.Length, StopTokenIds = [873] });
        Assert.Equal(published[1].GetProperty("expected_total_length").GetInt32(), dog.Length + eos.Sequences[0].TokenIds.Length);
        Assert.Equal(873, eos.Sequences[0].TokenIds[^1]);
        Assert.Equal(published[2].GetProperty("expected_length").GetInt32(), model.Tokenizer.Encode("Justin Timberlake.").Length);
    }

    [SharedDataFact]
    public void Gpt2TokenizerReproducesPublishedIds()
    {
        var folder = Models("gpt2-tokenizer-golden");
        var fromFiles = TeacherTokenizer.FromGpt2Files(Path.Combine(folder, "vocab.json"), Path.Combine(folder, "merges.txt"));
        var fromJson = TeacherTokenizer.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"));
        Assert.Equal(50257, fromFiles.VocabSize);
        Assert.Equal(50256, fromFiles.EosId);
        int n = 0;
        foreach (var c in Golden("gpt2-tokenizer-golden").GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = Ints(c.GetProperty("ids"));
            Assert.True(expected.SequenceEqual(fromFiles.Encode(text)), $"vocab+merges '{text}': expected [{string.Join(",", expected)}], got [{string.Join(",", fromFiles.Encode(text))}]");
            Assert.True(expected.SequenceEqual(fromJson.Encode(text)), $"tokenizer.json '{text}'");
            n++;
        }
        Assert.Equal(46, n);
        Assert.Equal("Hello world", fromFiles.Decode(fromFiles.Encode("Hello world")));
    }

    /// <summary>
    /// A model's vocabulary can be larger than its tokenizer's (padded to a multiple of 64), and sampling can pick a padding
    /// id. Every tokenizer format decodes an id it has no piece for as nothing, as Hugging Face's tokenizers do: the
    /// llama2.c one threw (the whole generation call failed), the others dropped it.
    /// </summary>
    [SharedDataFact]
    public void IdsOutsideTheTokenizersVocabularyDecodeAsNothingInEveryFormat()
    {
        var gpt2 = Models("gpt2-tokenizer-golden");
        var llama = Models("llama2-spm-tokenizer-golden");
        foreach (var (format, tokenizer) in new (string, TeacherTokenizer)[]
        {
            ("vocab+merges", TeacherTokenizer.FromGpt2Files(Path.Combine(gpt2, "vocab.json"), Path.Combine(gpt2, "merges.txt"))),
            ("tokenizer.json", TeacherTokenizer.FromTokenizerJson(Path.Combine(gpt2, "tokenizer.json"))),
            ("sentencepiece", TeacherTokenizer.FromSentencePiece(Path.Combine(llama, "tokenizer.model"))),
            ("llama2.c", TeacherTokenizer.FromLlama2cBin(Path.Combine(llama, "tokenizer.bin"))),
        })
        {
            var ids = tokenizer.EncodeContinuation(" there was a dog");
            int[] padded = [tokenizer.VocabSize + 3, .. ids[..1], tokenizer.VocabSize, .. ids[1..], -1];
            Assert.True(tokenizer.Decode(ids) == tokenizer.Decode(padded), $"{format}: '{tokenizer.Decode(padded)}'");
            Assert.True(tokenizer.DecodeContinuation(ids) == tokenizer.DecodeContinuation(padded), $"{format}: '{tokenizer.DecodeContinuation(padded)}'");
        }
    }

    [SharedDataFact]
    public void Llama2SentencePieceAndLlama2cTokenizersReproducePublishedIds()
    {
        var folder = Models("llama2-spm-tokenizer-golden");
        var sp = TeacherTokenizer.FromSentencePiece(Path.Combine(folder, "tokenizer.model"));
        var bin = TeacherTokenizer.FromLlama2cBin(Path.Combine(folder, "tokenizer.bin"));
        Assert.Equal(32000, sp.VocabSize);
        Assert.Equal(32000, bin.VocabSize);
        var golden = Golden("llama2-spm-tokenizer-golden");
        var failures = new List<string>();
        int n = 0;
        foreach (var c in golden.GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = Ints(c.GetProperty("ids"));
            if (!expected.SequenceEqual(sp.Encode(text))) failures.Add($"spm '{text}': [{string.Join(",", sp.Encode(text))}]");
            if (!expected.SequenceEqual(bin.Encode(text))) failures.Add($"bin '{text}': [{string.Join(",", bin.Encode(text))}]");
            n++;
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(46, n);
        foreach (var c in golden.GetProperty("llama2c_test_c_cases_with_bos").GetProperty("cases").EnumerateArray())
        {
            var text = c.GetProperty("text").GetString()!;
            Assert.Equal(Ints(c.GetProperty("ids")), sp.Encode(text, addBos: true));
            Assert.Equal(Ints(c.GetProperty("ids")), bin.Encode(text, addBos: true));
        }
    }
}
