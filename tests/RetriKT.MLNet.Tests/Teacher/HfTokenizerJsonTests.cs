using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// Byte-level BPE tokenizer.json files read as Hugging Face runs them (added tokens, normalizer, pre-tokenizer,
/// ignore_merges). The fixtures are small synthetic tokenizers carrying the real Qwen2 / LLaMA-3 sections; their
/// goldens come from transformers.js (Fixtures/hf-tokenizers/README.md).
/// </summary>
public class HfTokenizerJsonTests
{
    private static string Fixture(string name, string file = "tokenizer.json") =>
        Path.Combine(AppContext.BaseDirectory, "Teacher", "Fixtures", "hf-tokenizers", name, file);

    [Theory]
    [InlineData("qwen2-style", 216)]
    [InlineData("llama3-style", 216)]
    [InlineData("mixed-style", 215)]
    public void ReproducesTransformersJsIds(string name, int count)
    {
        var tokenizer = TeacherTokenizer.FromTokenizerJson(Fixture(name));
        var cases = JsonDocument.Parse(File.ReadAllText(Fixture(name, "golden.json"))).RootElement.EnumerateArray().ToList();
        Assert.Equal(count, cases.Count);
        var wrong = new List<string>();
        foreach (var c in cases)
        {
            var text = c.GetProperty("text").GetString()!;
            var expected = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
            var actual = tokenizer.Encode(text);
            if (!expected.SequenceEqual(actual)) wrong.Add($"{JsonSerializer.Serialize(text)}: expected [{string.Join(",", expected)}], got [{string.Join(",", actual)}]");
        }
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {cases.Count} differ:\n" + string.Join("\n", wrong.Take(10)));
    }

    [Fact]
    public void QwenAndLlamaSectionsChangeTheIdsWhereGpt2sSplitWouldNot()
    {
        var qwen = TeacherTokenizer.FromTokenizerJson(Fixture("qwen2-style"));
        int imStart = qwen.VocabSize - 4;
        // Qwen2: one digit per piece, "(word" one piece, NFC before the split, chat tokens whole.
        Assert.Equal(qwen.Encode("1") .Concat(qwen.Encode("2")).Concat(qwen.Encode("3")), qwen.Encode("123"));
        Assert.Equal(qwen.Encode("caf\u00e9"), qwen.Encode("cafe\u0301"));
        Assert.Equal([imStart], qwen.Encode("<|im_start|>"));
        Assert.Equal("<|im_start|>user\nhi", qwen.Decode(qwen.Encode("<|im_start|>user\nhi")));

        var llama = TeacherTokenizer.FromTokenizerJson(Fixture("llama3-style"));
        var vocab = JsonNode.Parse(File.ReadAllText(Fixture("llama3-style")))!["model"]!["vocab"]!;
        // ignore_merges: whole pre-tokens in the vocabulary that the merges never build come out as one id.
        Assert.Equal([vocab["(word"]!.GetValue<int>()], llama.Encode("(word"));
        Assert.Equal([vocab["123"]!.GetValue<int>(), vocab["123"]!.GetValue<int>()], llama.Encode("123123"));
        Assert.Equal([vocab["\u010a\u010a"]!.GetValue<int>()], llama.Encode("\n\n"));
        Assert.Null(llama.EosId); // no <|endoftext|>: the special ids come from the model's config.json
    }

    [Fact]
    public void FolderWithTokenizerJsonAndVocabAndMergesReadsTheJson()
    {
        using var dir = new TempDir();
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        File.Copy(Fixture("qwen2-style"), dir.File("tokenizer.json"));
        // The same vocabulary and merges as GPT-2-style files, as a Qwen2 folder ships them.
        var vocab = json["model"]!["vocab"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
        foreach (var added in json["added_tokens"]!.AsArray()) vocab[added!["content"]!.GetValue<string>()] = added["id"]!.GetValue<int>();
        File.WriteAllText(dir.File("vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllLines(dir.File("merges.txt"), ["#version: 0.2", .. json["model"]!["merges"]!.AsArray().Select(m => $"{m![0]} {m[1]}")]);

        var loaded = TeacherTokenizer.Load(dir.Path);
        Assert.Equal([dir.File("tokenizer.json")], loaded.SourceFiles);
        var golden = TeacherTokenizer.FromTokenizerJson(Fixture("qwen2-style"));
        foreach (var text in new[] { "x=10,y=200", "(word", "a\n\n\nb", "<|im_start|>user", "cafe\u0301" })
            Assert.Equal(golden.Encode(text), loaded.Encode(text));
        // The GPT-2-style pair alone still loads (with GPT-2's split, which differs on digits).
        var pair = TeacherTokenizer.FromGpt2Files(dir.File("vocab.json"), dir.File("merges.txt"));
        Assert.NotEqual(golden.Encode("x=10,y=200"), pair.Encode("x=10,y=200"));
    }

    [Fact]
    public void SpecialTokensComeFromTheTokenizerConfigBesideTheJson()
    {
        int IdOf(string fixture, string token) => JsonNode.Parse(File.ReadAllText(Fixture(fixture)))!["added_tokens"]!.AsArray()
            .Single(t => t!["content"]!.GetValue<string>() == token)!["id"]!.GetValue<int>();
        TeacherTokenizer WithConfig(TempDir dir, string fixture, string? config)
        {
            File.Copy(Fixture(fixture), dir.File("tokenizer.json"));
            if (config is not null) File.WriteAllText(dir.File("tokenizer_config.json"), config);
            return TeacherTokenizer.Load(dir.Path);
        }

        // LLaMA-3: BOS <|begin_of_text|>, EOS <|end_of_text|>; without the config it had none, so prompts went without BOS.
        using (var dir = new TempDir())
        {
            var llama = WithConfig(dir, "llama3-style", """{"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>", "special": true}}""");
            Assert.Equal(IdOf("llama3-style", "<|begin_of_text|>"), llama.BosId);
            Assert.Equal(IdOf("llama3-style", "<|end_of_text|>"), llama.EosId);
            Assert.Equal(llama.EosId, llama.PadId);
            Assert.Equal([llama.BosId!.Value, .. llama.Encode("hi")], llama.Encode("hi", addBos: true));
            Assert.Equal([dir.File("tokenizer.json"), dir.File("tokenizer_config.json")], llama.SourceFiles);
        }
        // Qwen2: no BOS (it took <|endoftext|> as one), EOS <|im_end|>, padding <|endoftext|>.
        using (var dir = new TempDir())
        {
            Assert.Equal(IdOf("qwen2-style", "<|endoftext|>"), WithConfig(dir, "qwen2-style", config: null).BosId);
        }
        using (var dir = new TempDir())
        {
            var qwen = WithConfig(dir, "qwen2-style", """{"bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": false}""");
            Assert.Null(qwen.BosId);
            Assert.Equal(qwen.Encode("hi"), qwen.Encode("hi", addBos: true));
            Assert.Equal(IdOf("qwen2-style", "<|im_end|>"), qwen.EosId);
            Assert.Equal(IdOf("qwen2-style", "<|endoftext|>"), qwen.PadId);
        }
        // A token the vocabulary does not have, or a value of another kind, is refused naming the file and the field.
        using (var dir = new TempDir())
        {
            var e = Assert.Throws<InvalidDataException>(() => WithConfig(dir, "llama3-style", """{"bos_token": "<s>"}"""));
            Assert.Equal($"{dir.File("tokenizer_config.json")}: field 'bos_token': token '<s>' is not in the vocabulary of {dir.File("tokenizer.json")}.", e.Message);
        }
        using (var dir = new TempDir())
        {
            var e = Assert.Throws<InvalidDataException>(() => WithConfig(dir, "llama3-style", """{"eos_token": 7}"""));
            Assert.Equal($"{dir.File("tokenizer_config.json")}: field 'eos_token': expected a token, an object with its 'content', or null, found 7.", e.Message);
        }
    }

    public static TheoryData<string, string, string> Unsupported => new()
    {
        { "pre_tokenizer", """{"type":"Whitespace"}""", "pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"WhitespaceSplit"}""", "pre_tokenizer type 'WhitespaceSplit' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"BertPreTokenizer"}""", "pre_tokenizer type 'BertPreTokenizer' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Punctuation","behavior":"Isolated"}""", "pre_tokenizer type 'Punctuation' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Metaspace","replacement":"▁"}""", "pre_tokenizer type 'Metaspace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"CharDelimiterSplit","delimiter":" "}""", "pre_tokenizer type 'CharDelimiterSplit' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"UnicodeScripts"}""", "pre_tokenizer type 'UnicodeScripts' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"FixedLength","length":5}""", "pre_tokenizer type 'FixedLength' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":false},{"type":"Whitespace"}]}""", "pre_tokenizer type 'Whitespace' is not supported (supported: ByteLevel, Split, Digits, Sequence)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"MergedWithPrevious","invert":false}""", "pre_tokenizer Split behavior 'MergedWithPrevious' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"MergedWithNext","invert":false}""", "pre_tokenizer Split behavior 'MergedWithNext' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", """{"type":"Split","pattern":{"Regex":"\\s"},"behavior":"Contiguous","invert":false}""", "pre_tokenizer Split behavior 'Contiguous' is not supported (supported: Isolated, Removed)." },
        { "pre_tokenizer", "null", "pre_tokenizer [] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"ByteLevel","add_prefix_space":false,"use_regex":false},{"type":"Digits"}]}""", "pre_tokenizer [ByteLevel, Digits] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "pre_tokenizer", """{"type":"Sequence","pretokenizers":[{"type":"ByteLevel","use_regex":true},{"type":"ByteLevel","use_regex":false}]}""", "pre_tokenizer [ByteLevel, ByteLevel] is not supported (a byte-level BPE needs exactly one ByteLevel step, the last)." },
        { "normalizer", """{"type":"Lowercase"}""", "normalizer type 'Lowercase' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Strip","strip_left":true,"strip_right":true}""", "normalizer type 'Strip' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"StripAccents"}""", "normalizer type 'StripAccents' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Replace","pattern":{"String":" "},"content":"▁"}""", "normalizer type 'Replace' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Prepend","prepend":"▁"}""", "normalizer type 'Prepend' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"BertNormalizer","lowercase":true}""", "normalizer type 'BertNormalizer' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
        { "normalizer", """{"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"Lowercase"}]}""", "normalizer type 'Lowercase' is not supported (supported: NFC, NFD, NFKC, NFKD, Sequence)." },
    };

    [Theory]
    [MemberData(nameof(Unsupported))]
    public void UnsupportedSectionIsRefusedInOneLineNamingTheFile(string field, string section, string message)
    {
        using var dir = new TempDir();
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json[field] = JsonNode.Parse(section);
        var path = dir.File("tokenizer.json");
        File.WriteAllText(path, json.ToJsonString());
        var e = Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path));
        Assert.Equal($"{path}: {message}", e.Message);
        Assert.Equal($"{path}: {message}", Assert.Throws<NotSupportedException>(() => TeacherTokenizer.Load(dir.Path)).Message);
    }

    [Fact]
    public void SingleWordAddedTokenAndModelAffixesAreRefused()
    {
        using var dir = new TempDir();
        var path = dir.File("tokenizer.json");
        var json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json["added_tokens"]![1]!["single_word"] = true;
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal($"{path}: added token '<|im_start|>' has single_word true, which is not supported.",
            Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path)).Message);

        json = JsonNode.Parse(File.ReadAllText(Fixture("qwen2-style")))!;
        json["model"]!["continuing_subword_prefix"] = "##";
        File.WriteAllText(path, json.ToJsonString());
        Assert.Equal($"{path}: model.continuing_subword_prefix '##' is not supported for byte-level BPE.",
            Assert.Throws<NotSupportedException>(() => TeacherTokenizer.FromTokenizerJson(path)).Message);
    }

    [SharedDataFact]
    public void Gpt2SplitsCharactersOutsideTheBmpByTheirCategory()
    {
        // transformers.js (and HF) ids: U+1D7D7 (a digit outside the BMP) is a digit, so "'ll" after it is a contraction.
        var gpt2 = TeacherTokenizer.FromTokenizerJson(TeacherGoldenTests.Models("gpt2-tokenizer-golden", "tokenizer.json"));
        Assert.Equal([995, 438, 2634, 24861, 239, 47728, 253, 245, 1183], gpt2.Encode(" world--\u00e9\u2211\U0001D7D7'll"));
    }
}
