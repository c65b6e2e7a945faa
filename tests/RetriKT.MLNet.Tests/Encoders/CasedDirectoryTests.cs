using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// A Hugging Face directory's tokenizer_config.json says whether text is lower-cased; a cased model
/// (do_lower_case false) keeps its capitals and accents, as its own tokenizer does, instead of being read as uncased.
/// </summary>
public class CasedDirectoryTests
{
    [SharedDataFact]
    public void DoLowerCaseFalseKeepsCase()
    {
        using var temp = new TempDir("retrikt-bert-");
        var source = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        foreach (var f in new[] { "config.json", "model.safetensors", "vocab.txt" }) File.Copy(Path.Combine(source, f), temp.File(f));
        var config = File.ReadAllText(Path.Combine(source, "tokenizer_config.json"));

        // As shipped (do_lower_case true), and with no tokenizer_config.json: uncased.
        File.WriteAllText(temp.File("tokenizer_config.json"), config);
        Assert.True(ManagedBertSentenceEncoder.Load(temp.Path).Vocabulary.LowerCase);
        File.Delete(temp.File("tokenizer_config.json"));
        Assert.True(ManagedBertSentenceEncoder.Load(temp.Path).Vocabulary.LowerCase);

        // Cased: "Hello" keeps its capital, which this (uncased) vocabulary does not hold.
        File.WriteAllText(temp.File("tokenizer_config.json"), config.Replace("\"do_lower_case\": true", "\"do_lower_case\": false"));
        var cased = ManagedBertSentenceEncoder.Load(temp.Path);
        Assert.False(cased.Vocabulary.LowerCase);
        Assert.Equal([cased.Vocabulary.UnknownId], cased.Vocabulary.Encode("Hello"));
        Assert.Equal([7592], cased.Vocabulary.Encode("hello"));

        // Lower-cased but accents kept: not what this tokenizer does; refused with the file and the values.
        File.WriteAllText(temp.File("tokenizer_config.json"), config.Replace("\"strip_accents\": null", "\"strip_accents\": false"));
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
        Assert.Contains(temp.File("tokenizer_config.json"), e.Message);
        Assert.Contains("strip_accents false", e.Message);
    }

    /// <summary>
    /// sentence-transformers lower-cases the text (keeping accents) before a cased tokenizer when sentence_bert_config.json
    /// says do_lower_case; that file's flag was not read, so such a model kept every capital. Refused now, naming both files.
    /// </summary>
    [SharedDataFact]
    public void SentenceTransformersLowerCasingOverACasedTokenizerIsRefused()
    {
        using var temp = new TempDir("retrikt-bert-");
        var source = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        foreach (var f in new[] { "config.json", "model.safetensors", "vocab.txt" }) File.Copy(Path.Combine(source, f), temp.File(f));
        var config = File.ReadAllText(Path.Combine(source, "tokenizer_config.json"));
        File.WriteAllText(temp.File("tokenizer_config.json"), config.Replace("\"do_lower_case\": true", "\"do_lower_case\": false"));
        File.WriteAllText(temp.File("sentence_bert_config.json"), """{"max_seq_length": 128, "do_lower_case": true}""");
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
        Assert.StartsWith(temp.File("sentence_bert_config.json") + ": do_lower_case true over a cased tokenizer (" + temp.File("tokenizer_config.json"), e.Message);

        // do_lower_case false there (sentence-transformers' default), or an uncased tokenizer: loads as before.
        File.WriteAllText(temp.File("sentence_bert_config.json"), """{"max_seq_length": 128, "do_lower_case": false}""");
        Assert.False(ManagedBertSentenceEncoder.Load(temp.Path).Vocabulary.LowerCase);
        File.WriteAllText(temp.File("tokenizer_config.json"), config);
        File.WriteAllText(temp.File("sentence_bert_config.json"), """{"max_seq_length": 128, "do_lower_case": true}""");
        Assert.True(ManagedBertSentenceEncoder.Load(temp.Path).Vocabulary.LowerCase);
    }

    /// <summary>
    /// tokenize_chinese_chars false makes Hugging Face's BERT tokenizer keep a run of CJK ideographs in one word ("東京" is
    /// 東 ##京, ids 1879 30281), where this tokenizer makes each ideograph a word (東 京, 1879 1755), as true, the default,
    /// does. Loaded, it gave such text other ids than the model's own tokenizer without a word; it is refused naming the file.
    /// </summary>
    [SharedDataFact]
    public void KeepingChineseCharactersTogetherIsRefused()
    {
        using var temp = new TempDir("retrikt-bert-");
        var source = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        foreach (var f in new[] { "config.json", "model.safetensors", "vocab.txt" }) File.Copy(Path.Combine(source, f), temp.File(f));
        var config = File.ReadAllText(Path.Combine(source, "tokenizer_config.json"));
        Assert.Contains("\"tokenize_chinese_chars\": true", config);
        File.WriteAllText(temp.File("tokenizer_config.json"), config);
        Assert.Equal([1879, 1755], ManagedBertSentenceEncoder.Load(temp.Path).Vocabulary.Encode("東京"));

        File.WriteAllText(temp.File("tokenizer_config.json"), config.Replace("\"tokenize_chinese_chars\": true", "\"tokenize_chinese_chars\": false"));
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
        Assert.Equal($"{temp.File("tokenizer_config.json")}: tokenize_chinese_chars false is not supported; this tokenizer makes each CJK ideograph a word of its own (tokenize_chinese_chars true).", e.Message);
    }
}
