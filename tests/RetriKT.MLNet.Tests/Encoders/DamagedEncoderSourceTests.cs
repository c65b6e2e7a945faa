using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Damaged or foreign encoder sources fail with one line naming the file and what was expected, or load as what they
/// are; never as something else.
/// </summary>
public class DamagedEncoderSourceTests
{
    [SharedDataFact]
    public void ConfigOfAnotherArchitectureIsRefused()
    {
        using var temp = new TempDir("retrikt-bert-");
        var source = SharedData.Path("models", "hf-tiny-random-bert");
        foreach (var f in new[] { "pytorch_model.bin", "vocab.txt" }) File.Copy(Path.Combine(source, f), temp.File(f));
        // RoBERTa's encoder has BERT's tensor names but offsets its positions by 2; DistilBERT has no segments.
        foreach (var type in new[] { "roberta", "distilbert" })
        {
            File.WriteAllText(temp.File("config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"model_type\": \"bert\"", $"\"model_type\": \"{type}\""));
            var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
            Assert.Contains(temp.File("config.json"), e.Message);
            Assert.Contains($"model_type '{type}'", e.Message);
            Assert.Contains("'bert'", e.Message);
        }
    }

    [SharedDataFact]
    public void TruncatedPackageDllNamesTheFile()
    {
        using var temp = new TempDir("retrikt-bert-");
        var bytes = File.ReadAllBytes(PretrainedEncoderPackage.MiniLM.Locate());
        foreach (var fraction in new[] { 0.1, 0.5, 0.99 })
        {
            var path = temp.File($"cut{(int)(fraction * 100)}.dll");
            File.WriteAllBytes(path, bytes[..(int)(bytes.Length * fraction)]);
            var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(path));
            Assert.Contains(path, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [SharedDataFact]
    public void PackageDllIsKnownByItsResourcesNotItsFileName()
    {
        using var temp = new TempDir("retrikt-bert-");
        // arctic-embed-xs copied under another name, and under MiniLM's file name: still [CLS] pooling, as arctic.
        var renamed = temp.File("MyEncoder.dll");
        File.Copy(PretrainedEncoderPackage.ArcticXs.Locate(), renamed);
        Assert.Equal(BertPooling.Cls, ManagedBertSentenceEncoder.Load(renamed).Pooling);
        Directory.CreateDirectory(temp.File("swapped"));
        var swapped = Path.Combine(temp.File("swapped"), PretrainedEncoderPackage.MiniLM.AssemblyFileName);
        File.Copy(PretrainedEncoderPackage.ArcticXs.Locate(), swapped);
        Assert.Equal(BertPooling.Cls, ManagedBertSentenceEncoder.Load(swapped).Pooling);
        Assert.Equal(512, ManagedBertSentenceEncoder.Load(swapped).Tokenize(string.Join(" ", Enumerable.Repeat("word", 600))).Length);
    }

    /// <summary>
    /// The public ForAssembly identified a package by file name: arctic-embed-xs copied under another name was no
    /// package, and under MiniLM's file name it was MiniLM (mean pooling, 256 tokens). It reads the resources now.
    /// </summary>
    [SharedDataFact]
    public void ForAssemblyIdentifiesAPackageByItsResources()
    {
        using var temp = new TempDir("retrikt-bert-");
        var renamed = temp.File("MyEncoder.dll");
        File.Copy(PretrainedEncoderPackage.ArcticXs.Locate(), renamed);
        Assert.Same(PretrainedEncoderPackage.ArcticXs, PretrainedEncoderPackage.ForAssembly(renamed));
        Directory.CreateDirectory(temp.File("swapped"));
        var swapped = Path.Combine(temp.File("swapped"), PretrainedEncoderPackage.MiniLM.AssemblyFileName);
        File.Copy(PretrainedEncoderPackage.ArcticXs.Locate(), swapped);
        Assert.Same(PretrainedEncoderPackage.ArcticXs, PretrainedEncoderPackage.ForAssembly(swapped));
        Assert.Same(PretrainedEncoderPackage.MiniLM, PretrainedEncoderPackage.ForAssembly(PretrainedEncoderPackage.MiniLM.Locate()));
        // An assembly that embeds no known model is no package, whatever its name.
        var other = Path.Combine(temp.File("swapped"), PretrainedEncoderPackage.ArcticXs.AssemblyFileName);
        File.Copy(typeof(PretrainedEncoderPackage).Assembly.Location, other);
        Assert.Null(PretrainedEncoderPackage.ForAssembly(other));
        // A file that is not there, or not an assembly, is named.
        Assert.Contains(temp.File("missing.dll"), Assert.Throws<FileNotFoundException>(() => PretrainedEncoderPackage.ForAssembly(temp.File("missing.dll"))).Message);
        File.WriteAllText(temp.File("text.dll"), "not an assembly");
        Assert.StartsWith(temp.File("text.dll") + ": not a .NET assembly", Assert.Throws<InvalidDataException>(() => PretrainedEncoderPackage.ForAssembly(temp.File("text.dll"))).Message);
    }
}
