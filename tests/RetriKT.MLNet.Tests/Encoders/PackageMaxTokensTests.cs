using Microsoft.ML;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Each package truncates where its sentence-transformers model does (sentence_bert_config.json max_seq_length):
/// all-MiniLM-L6-v2 at 256 tokens, snowflake-arctic-embed-xs at 512. A fixed default of 256 cut arctic's long inputs
/// in half, and their embeddings drifted from the model's (cosine 0.90 on 500-token texts).
/// </summary>
public class PackageMaxTokensTests
{
    private static readonly string LongText = string.Join(" ", Enumerable.Repeat("a charming and often affecting journey", 120));

    [SharedDataFact]
    public void ManagedEncoderTruncatesAtEachPackagesOwnLength()
    {
        Assert.Equal(256, ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM).Tokenize(LongText).Length);
        Assert.Equal(512, ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.ArcticXs).Tokenize(LongText).Length);
        // A directory without sentence_bert_config.json takes its positions (512; its tokenizer sets no limit), as
        // sentence-transformers does (DirectoryMaxTokensTests); an explicit value wins.
        Assert.Equal(512, ManagedBertSentenceEncoder.Load(SharedData.Path("models", "bert-uncased-tokenizer-golden")).Tokenize(LongText).Length);
        Assert.Equal(300, ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.ArcticXs, new() { MaxTokens = 300 }).Tokenize(LongText).Length);
    }

    [SharedDataFact]
    public void ADirectoryTruncatesWhereItsSentenceTransformersConfigSays()
    {
        using var dir = new TempDir();
        var golden = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        foreach (var file in Directory.GetFiles(golden)) File.Copy(file, dir.File(Path.GetFileName(file)));
        // 300: not the 512 the directory otherwise gets (its positions), and within them.
        File.WriteAllText(dir.File("sentence_bert_config.json"), """{"max_seq_length": 300}""");
        Assert.Equal(300, ManagedBertSentenceEncoder.Load(dir.Path).Tokenize(LongText).Length);
        // Not a positive integer: refused naming the file and the field.
        File.WriteAllText(dir.File("sentence_bert_config.json"), """{"max_seq_length": "512"}""");
        var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(dir.Path));
        Assert.Equal($"{dir.File("sentence_bert_config.json")}: field 'max_seq_length': expected a positive integer, found \"512\".", e.Message);
    }

    [SharedDataFact]
    public void TorchSharpEncoderTruncatesAtEachPackagesOwnLength()
    {
        var ml = new MLContext(seed: 1);
        using (var mini = BertSentenceEncoder.Load(ml, PretrainedEncoderPackage.MiniLM)) Assert.Equal(256, mini.Tokenize(LongText).Length);
        using (var arctic = BertSentenceEncoder.Load(ml, PretrainedEncoderPackage.ArcticXs)) Assert.Equal(512, arctic.Tokenize(LongText).Length);
    }
}
