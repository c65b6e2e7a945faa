using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;
using Xunit.Abstractions;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// The runtime's managed BERT encoder (no TorchSharp) against the training assembly's TorchSharp encoder, which
/// <see cref="BertEncoderParityTests"/> holds to ONNX Runtime: same weights, same tokens, pooled embeddings ≤ 1e-4.
/// </summary>
public class ManagedBertEncoderTests(ITestOutputHelper output)
{
    [SharedDataFact]
    public void MiniLMMeanPoolingMatchesTorchSharp() => AssertParityWithTorchSharp("MiniLM", BertPooling.Mean);

    [SharedDataFact]
    public void MiniLMClsPoolingMatchesTorchSharp() => AssertParityWithTorchSharp("MiniLM", BertPooling.Cls);

    [SharedDataFact]
    public void ArcticXsClsPoolingMatchesTorchSharp() => AssertParityWithTorchSharp("ArcticXs", BertPooling.Cls);

    [SharedDataFact]
    public void ArcticXsMeanPoolingMatchesTorchSharp() => AssertParityWithTorchSharp("ArcticXs", BertPooling.Mean);

    private void AssertParityWithTorchSharp(string name, BertPooling pooling)
    {
        var dll = BertEncoderParityTests.Package(name).Locate();
        var sentences = BertEncoderParityTests.Sentences(); // 64 SST-2 dev sentences + 46 tokenizer-golden texts
        var managed = ManagedBertSentenceEncoder.Load(dll, new ManagedBertSentenceEncoder.Options { Pooling = pooling, Normalize = false });
        using var torch = BertSentenceEncoder.Load(new MLContext(seed: 1), dll, new BertSentenceEncoder.Options { Pooling = pooling, Normalize = false, BatchSize = 16 });
        Assert.Equal(pooling, managed.Pooling);
        Assert.Equal(torch.Config, managed.Config);
        Assert.Equal(torch.ParameterCount, managed.ParameterCount);
        var worst = MaxAbsDifference(managed.Embed(sentences), torch.Embed(sentences), sentences);
        output.WriteLine($"{name} {pooling}: {sentences.Count} sentences, max |managed - TorchSharp| = {worst.Diff:E2}");
        Assert.True(worst.Diff <= 1e-4, $"{name} {pooling}: max |managed - TorchSharp| = {worst.Diff:E2} on '{worst.Text}' (allowed 1e-4)");
    }

    [SharedDataFact]
    public void HuggingFaceDirectoriesMatchTorchSharp()
    {
        // safetensors with bert.* names and a cls.* head (hidden 4); pytorch_model.bin, hidden 32, FFN 37 (odd widths
        // exercise the matmul's tails), 5 layers, 4 heads. Random weights, so parity and the published goldens only.
        string[] texts = ["Hello world", "a charming and often affecting journey", "", "The quick brown fox jumps over the lazy dog."];
        foreach (var model in new[] { "bert-uncased-tokenizer-golden", "hf-tiny-random-bert" })
        {
            var dir = SharedData.Path("models", model);
            var managed = ManagedBertSentenceEncoder.Load(dir, new ManagedBertSentenceEncoder.Options { Normalize = false });
            using var torch = BertSentenceEncoder.Load(new MLContext(seed: 1), dir, new BertSentenceEncoder.Options { Normalize = false });
            Assert.Equal(torch.Config, managed.Config);
            var worst = MaxAbsDifference(managed.Embed(texts), torch.Embed(texts), texts);
            output.WriteLine($"{model}: max |managed - TorchSharp| = {worst.Diff:E2}");
            Assert.True(worst.Diff <= 1e-5, $"{model}: max |managed - TorchSharp| = {worst.Diff:E2} on '{worst.Text}'");
        }

        // The published first values of hf-tiny-random-bert's mean-pooled embedding (as the TorchSharp test checks).
        var tiny = SharedData.Path("models", "hf-tiny-random-bert");
        using var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(tiny, "golden.json")));
        var published = golden.RootElement.GetProperty("published")[0];
        var vector = ManagedBertSentenceEncoder.Load(tiny, new ManagedBertSentenceEncoder.Options { Normalize = false })
            .Embed([published.GetProperty("input").GetString()!])[0];
        var expected = published.GetProperty("expected_first3").EnumerateArray().Select(x => x.GetDouble()).ToArray();
        for (int i = 0; i < 3; i++)
            Assert.True(Math.Abs(vector[i] - expected[i]) <= 1e-6 * Math.Abs(expected[i]) + 1e-7, $"dimension {i}: expected {expected[i]}, found {vector[i]}");
    }

    [SharedDataFact]
    public void DamagedOrForeignWeightsFailWithOneClearLine()
    {
        using var temp = new TempDir("retrikt-managed-bert-");
        var dir = temp.Path;
        var source = SharedData.Path("models", "bert-uncased-tokenizer-golden");
        foreach (var f in new[] { "model.safetensors", "vocab.txt", "config.json" }) File.Copy(Path.Combine(source, f), Path.Combine(dir, f));

        // Truncated safetensors (a download cut short): the file and the cause, on one line.
        var bytes = File.ReadAllBytes(Path.Combine(source, "model.safetensors"));
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(dir));
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        // Weights of another shape than the config says: the tensor by name.
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), bytes);
        File.WriteAllText(Path.Combine(dir, "config.json"), File.ReadAllText(Path.Combine(source, "config.json")).Replace("\"intermediate_size\": 8", "\"intermediate_size\": 9"));
        e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(dir));
        Assert.Contains("encoder.layer.0.intermediate.dense.weight' has shape [8,4], expected [9,4]", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        // A foreign file: not a package DLL at all.
        var foreign = Path.Combine(dir, "not-a-package.dll");
        File.WriteAllText(foreign, "this is not a PE file");
        var foreignError = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(foreign));
        Assert.Contains("not-a-package.dll", foreignError.Message);
        Assert.DoesNotContain('\n', foreignError.Message);

        // A header entry without its dtype, or with offsets as strings: the tensor by name, not a NullReferenceException.
        var weights = Path.Combine(dir, "model.safetensors");
        string first = WithHeader(weights, bytes, header => header.First(p => p.Key != "__metadata__").Value!.AsObject().Remove("dtype"));
        var noDtype = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(dir));
        Assert.Equal($"{weights}: tensor '{first}': 'dtype' is missing or not a string in the safetensors header; expected " +
                     "{\"dtype\": \"F32\", \"shape\": [..], \"data_offsets\": [begin, end]}.", noDtype.Message);
        WithHeader(weights, bytes, header => header.First(p => p.Key != "__metadata__").Value!["data_offsets"] = new System.Text.Json.Nodes.JsonArray("0", "16"));
        Assert.Contains("'data_offsets' is not [begin, end]", Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(dir)).Message);

        // Writes the safetensors file with its JSON header changed; returns the first tensor's name.
        static string WithHeader(string path, byte[] original, Action<System.Text.Json.Nodes.JsonObject> change)
        {
            long length = BitConverter.ToInt64(original, 0);
            var header = System.Text.Json.Nodes.JsonNode.Parse(original.AsSpan(8, (int)length))!.AsObject();
            string name = header.First(p => p.Key != "__metadata__").Key;
            change(header);
            var json = System.Text.Encoding.UTF8.GetBytes(header.ToJsonString());
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)json.Length), .. json, .. original.AsSpan(8 + (int)length)]);
            return name;
        }
    }

    [Fact]
    public void GeluIsTheExactErfFormToFloatPrecision()
    {
        // The reference erf is checked against published values first, then the vectorised GELU against it on a fine
        // grid over [-12, 12] (BERT's pre-activations stay well inside) plus the extremes.
        (double X, double Erf)[] cases = [(0, 0), (0.1, 0.1124629160182849), (0.5, 0.5204998778130465), (1, 0.8427007929497149),
            (2, 0.9953222650189527), (-3, -0.9999779095030014), (4.5, 0.9999999998033839), (7, 1)];
        foreach (var (x, erf) in cases) Assert.True(Math.Abs(Erf(x) - erf) <= 1e-15, $"reference erf({x}) = {Erf(x)}, expected {erf}");

        var xs = Enumerable.Range(0, 24001).Select(i => -12f + i * 0.001f).Concat([-1e4f, -50f, 50f, 1e4f, 0f, -0f]).ToArray();
        var v = xs.ToArray();
        ManagedBertEncoder.GeluErf(v, new float[v.Length], new float[v.Length]);
        double worst = 0;
        for (int i = 0; i < xs.Length; i++)
        {
            double x = xs[i], expected = 0.5 * x * (1 + Erf(x / Math.Sqrt(2)));
            double error = Math.Abs(v[i] - expected) / Math.Max(1, Math.Abs(expected));
            worst = Math.Max(worst, error);
            Assert.True(error <= 1e-6, $"gelu({x}) = {v[i]}, expected {expected}");
        }
        output.WriteLine($"max relative error of the vectorised exact GELU: {worst:E2}");
    }

    /// <summary>erf(x) to ~1e-16: W. J. Cody's rational approximations (the reference for the GELU test).</summary>
    private static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax < 0.5)
        {
            double z = x * x;
            double num = (((0.185777706184603153 * z + 3.16112374387056560) * z + 113.864154151050156) * z + 377.485237685302021) * z + 3209.37758913846947;
            double den = (((z + 23.6012909523441209) * z + 244.024637934444173) * z + 1282.61652607737228) * z + 2844.23683343917062;
            return x * num / den;
        }
        double erfc;
        if (ax < 4)
        {
            double num = (((((((2.15311535474403846e-8 * ax + 5.64188496988670089e-1) * ax + 8.88314979438837594) * ax + 66.1191906371416295) * ax
                + 298.635138197400131) * ax + 881.952221241769090) * ax + 1712.04761263407058) * ax + 2051.07837782607147) * ax + 1230.33935479799725;
            double den = (((((((ax + 15.7449261107098347) * ax + 117.693950891312499) * ax + 537.181101862009858) * ax + 1621.38957456669019) * ax
                + 3290.79923573345963) * ax + 4362.61909014324716) * ax + 3439.36767414372164) * ax + 1230.33935480374942;
            erfc = Math.Exp(-ax * ax) * num / den;
        }
        else if (ax < 6)
        {
            double z = 1 / (ax * ax);
            double num = ((((1.63153871373020978e-2 * z + 3.05326634961232344e-1) * z + 3.60344899949804439e-1) * z + 1.25781726111229246e-1) * z + 1.60837851487422766e-2) * z + 6.58749161529837803e-4;
            double den = ((((z + 2.56852019228982242) * z + 1.87295284992346725) * z + 5.27905102951428412e-1) * z + 6.05183413124413191e-2) * z + 2.33520497626869185e-3;
            erfc = Math.Exp(-ax * ax) / ax * (0.56418958354775628695 - z * num / den);
        }
        else erfc = 0;
        return x < 0 ? erfc - 1 : 1 - erfc;
    }

    private sealed class QueryRow
    {
        [VectorType(384)]
        public float[] Features { get; set; } = [];
    }

    [SharedDataFact]
    public void ManagedKeysWorkInTheStoreAndTheRetriever()
    {
        // What a runtime-only app does: keys for the store and queries for the KnowledgeRetriever, no TorchSharp.
        var mlContext = new MLContext(seed: 1);
        var rows = File.ReadLines(SharedData.Path("data", "SST-2", "dev.tsv")).Skip(1).Take(40).Select(l => l.Split('\t')).ToList();
        string[] labels = ["0", "1"];
        var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM);
        var store = new KnowledgeStore(labels, rows.Take(32).Select(r => KnowledgeEntry.Gold(r[0], null, Array.IndexOf(labels, r[1]), labels.Length)))
            .WithEmbeddings(encoder, batchSize: 16);
        Assert.Equal(384, store.Dimension);

        // Keys are the TorchSharp encoder's keys.
        using (var torch = BertSentenceEncoder.Load(mlContext, PretrainedEncoderPackage.MiniLM))
        {
            var torchStore = new KnowledgeStore(labels, store.Entries).WithEmbeddings(torch, batchSize: 16);
            for (int i = 0; i < store.Count; i++)
                for (int d = 0; d < 384; d++)
                    Assert.True(Math.Abs(store.Embedding(i)[d] - torchStore.Embedding(i)[d]) <= 1e-4, $"entry {i}, dimension {d}");
        }

        var texts = rows.Select(r => r[0]).ToList();
        var queries = encoder.Embed(texts);
        var data = mlContext.Data.LoadFromEnumerable(queries.Select(q => new QueryRow { Features = q }));
        var result = mlContext.RetriKT().KnowledgeRetriever(store, k: 4).Fit(data).Transform(data);
        var ids = result.GetColumn<VBuffer<int>>("NeighborIds").Select(v => v.DenseValues().ToArray()).ToList();
        var sims = result.GetColumn<VBuffer<float>>("NeighborSimilarities").Select(v => v.DenseValues().ToArray()).ToList();
        for (int q = 0; q < 32; q++)
        {
            Assert.True(store.Entries[ids[q][0]].Text == texts[q], $"query {q} '{texts[q]}' found entry {ids[q][0]} first");
            Assert.True(sims[q][0] > 0.9999f, $"query {q}: self-similarity {sims[q][0]}");
        }
        for (int q = 0; q < texts.Count; q++) Assert.True(sims[q][3] < sims[q][0], $"query {q}: neighbours are not ranked");
    }

    [SharedDataFact]
    public void AnAppWithTheRuntimeOnlyComputesTheSameKeysAndRetrievesWithThem()
    {
        // tests/RetriKT.MLNet.RuntimeOnly references RetriKT.MLNet and Microsoft.ML only (RuntimeOnlyServingTests checks
        // its deps.json); it exits with 3 if a TorchSharp assembly was loaded.
        var sentences = File.ReadLines(SharedData.Path("data", "SST-2", "dev.tsv")).Skip(1).Take(24).Select(l => l.Split('\t')[0]).ToList();
        var dll = PretrainedEncoderPackage.MiniLM.Locate();
        using var folder = new TempDir("retrikt-runtime-only-keys-");
        var textsPath = Path.Combine(folder.Path, "texts.txt");
        File.WriteAllLines(textsPath, sentences);
        var (code, stdout, error) = ChildProcess.RunApp("RetriKT.MLNet.RuntimeOnly.dll", ["--keys", dll, textsPath], timeoutSeconds: 180);
        Assert.True(code == 0, $"runtime-only app exited with {code}: {error}");
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(sentences.Count, lines.Length);
        using var torch = BertSentenceEncoder.Load(new MLContext(seed: 1), dll);
        var expected = torch.Embed(sentences);
        var actual = lines.Select(l => l.Split(' ').Skip(1).Select(x => float.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray()).ToArray();
        var worst = MaxAbsDifference(actual, expected, sentences);
        Assert.True(worst.Diff <= 1e-4, $"runtime-only keys vs TorchSharp: {worst.Diff:E2} on '{worst.Text}'");
        for (int i = 0; i < sentences.Count; i++)
            Assert.True(sentences[int.Parse(lines[i].Split(' ')[0])] == sentences[i], $"query {i} '{sentences[i]}' retrieved {lines[i].Split(' ')[0]} first");
    }

    [SharedDataFact]
    public void ThroughputOnTheSame256SentencesAgainstTorchSharp()
    {
        // A measurement, reported in the test output; the only assertion is agreement. Numbers depend on the machine's
        // load (the TorchSharp encoder uses OMP_NUM_THREADS threads, the managed one MaxDegreeOfParallelism).
        var sentences = File.ReadLines(SharedData.Path("data", "SST-2", "dev.tsv")).Skip(1).Take(256).Select(l => l.Split('\t')[0]).ToList();
        var dll = PretrainedEncoderPackage.MiniLM.Locate();
        var managed = ManagedBertSentenceEncoder.Load(dll);
        var single = ManagedBertSentenceEncoder.Load(dll, new ManagedBertSentenceEncoder.Options { MaxDegreeOfParallelism = 1 });
        using var torch = BertSentenceEncoder.Load(new MLContext(seed: 1), dll);
        int tokens = sentences.Sum(s => managed.Tokenize(s).Length);
        managed.Embed(sentences.Take(8).ToList()); // warm-up (JIT), each
        single.Embed(sentences.Take(8).ToList());
        torch.Embed(sentences.Take(8).ToList());

        (float[][] Vectors, double Seconds) Time(Func<IReadOnlyList<string>, float[][]> embed)
        {
            var watch = Stopwatch.StartNew();
            var vectors = embed(sentences);
            return (vectors, watch.Elapsed.TotalSeconds);
        }
        var (m, mSeconds) = Time(managed.Embed);
        var (_, sSeconds) = Time(single.Embed);
        var (t, tSeconds) = Time(torch.Embed);
        var worst = MaxAbsDifference(m, t, sentences);
        output.WriteLine($"MiniLM, {sentences.Count} SST-2 dev sentences ({tokens} tokens), {Environment.ProcessorCount} processors, " +
            $"OMP_NUM_THREADS={Environment.GetEnvironmentVariable("OMP_NUM_THREADS") ?? "unset"}:");
        output.WriteLine($"  managed, {Environment.ProcessorCount} threads: {sentences.Count / mSeconds:F1} sentences/s");
        output.WriteLine($"  managed, 1 thread:  {sentences.Count / sSeconds:F1} sentences/s");
        output.WriteLine($"  TorchSharp (CPU, batch 32): {sentences.Count / tSeconds:F1} sentences/s");
        output.WriteLine($"  max |managed - TorchSharp| (unit vectors) = {worst.Diff:E2}");
        Assert.True(worst.Diff <= 1e-4, $"max |managed - TorchSharp| = {worst.Diff:E2} on '{worst.Text}'");
    }

    private static (double Diff, string Text) MaxAbsDifference(float[][] a, float[][] b, IReadOnlyList<string> texts)
    {
        Assert.Equal(b.Length, a.Length);
        (double Diff, string Text) worst = (0, "");
        for (int i = 0; i < a.Length; i++)
        {
            Assert.Equal(b[i].Length, a[i].Length);
            for (int d = 0; d < a[i].Length; d++)
            {
                double diff = Math.Abs(a[i][d] - b[i][d]);
                if (!(diff <= worst.Diff)) worst = (diff, texts[i]); // NaN counts as worst
            }
        }
        return worst;
    }
}
