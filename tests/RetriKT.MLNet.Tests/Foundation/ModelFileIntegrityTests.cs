using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// Damaged model files: a few hundred seeded bit flips and truncations of real RetrievalClassifier model.zip files.
/// Each damaged file either loads and predicts exactly as the original, or fails with one clear, printable line;
/// never a different model. Flips are spread over every part of the zip (each entry's header and data, the central
/// directory), not only the large weights.
/// </summary>
public class ModelFileIntegrityTests
{
    private sealed class Output
    {
        public float[] Score { get; set; } = [];
        public string PredictedLabel { get; set; } = "";
    }

    private static readonly Lazy<(byte[] StudentOnly, byte[] Served, IDataView Input)> Models = new(() =>
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            Epochs = 2, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, NeighborCount = 4, Seed = 3,
        }).Fit(keys.Transform(train));
        var input = ml.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(6).ToList());
        byte[] Save(ITransformer model)
        {
            using var buffer = new MemoryStream();
            ml.Model.Save(model, train.Schema, buffer);
            return buffer.ToArray();
        }
        var served = student.Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(student.Transform(keys.Transform(train))));
        return (Save(student), Save(served), input);
    });

    private sealed class TextIn
    {
        public string Text { get; set; } = "";
    }

    private sealed class LengthOut
    {
        public float Length { get; set; }
    }

    /// <summary>
    /// SaveAtomically: a failed save (here a custom mapping ML.NET cannot save, which throws after model.zip was opened)
    /// leaves the previous model.zip byte for byte and no temp file; a good save replaces it and loads.
    /// </summary>
    [Fact]
    public void ASaveThatFailsLeavesThePreviousModelWholeAndNoTempFile()
    {
        using var temp = new TempDir("retrikt-atomic-save-");
        var path = Path.Combine(temp.Path, "models", "model.zip"); // the folder is created
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new TextIn { Text = "A Fine Film" } });
        var good = ml.Transforms.Text.NormalizeText("Normalized", "Text").Fit(data);
        ml.Model.SaveAtomically(good, data.Schema, path);
        var before = File.ReadAllBytes(path);
        Assert.NotEmpty(before);

        var unsavable = ml.Transforms.CustomMapping<TextIn, LengthOut>((i, o) => o.Length = i.Text.Length, contractName: null).Fit(data);
        Assert.ThrowsAny<Exception>(() => ml.Model.SaveAtomically(unsavable, data.Schema, path));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(Path.GetDirectoryName(path)!));

        var loaded = new MLContext().Model.LoadVerified(path, out var schema);
        Assert.Equal("Text", Assert.Single(schema).Name);
        Assert.Equal("a fine film", loaded.Transform(data).GetColumn<string>("Normalized").Single());
    }

    [SharedDataFact]
    public void DamagedStudentFilesFailClearlyThroughAPlainModelLoad()
    {
        var (file, _, input) = Models.Value;
        // The student alone: every part is RetriKT's own or ML.NET's schema, so a plain Model.Load must catch all damage.
        var outcome = Fuzz(file, 200, seed: 11, bytes =>
        {
            var ml = new MLContext(seed: 1);
            var model = ml.Model.Load(new MemoryStream(bytes), out _);
            return Predict(ml, model, input, served: false);
        }, e => ModelFiles.Innermost(e).Message);
        Assert.True(outcome.Identical > 0 && outcome.Failed > 50, outcome.ToString());
        Assert.True(outcome.NamedRetriKTPart > 10, $"failures naming a RetriKT part: {outcome}");
    }

    [SharedDataFact]
    public void DamagedServedFilesFailWithOneLineNamingTheFileThroughLoadVerified()
    {
        var (_, served, input) = Models.Value;
        // The Quickstart's served form adds ML.NET's MapKeyToValue, whose parts only the zip CRC protects.
        var outcome = Fuzz(served, 150, seed: 12, bytes =>
        {
            var ml = new MLContext(seed: 1);
            var model = ml.Model.LoadVerified(new MemoryStream(bytes), "model.zip", out _);
            return Predict(ml, model, input, served: true);
        }, e =>
        {
            Assert.IsType<InvalidDataException>(e);
            Assert.StartsWith("model.zip: ", e.Message);
            return e.Message;
        });
        Assert.True(outcome.Failed > 50, outcome.ToString());
    }

    [SharedDataFact]
    public void ARewrittenPartInAValidZipIsNamed_WithoutReflectionLayersOrBinary()
    {
        // The issue's cases: a tampered store, an emptied vocabulary, changed weights.
        ARewrittenPartIsNamed("Store.bin", empty: false);
        ARewrittenPartIsNamed("Vocabulary.txt", empty: true);
        ARewrittenPartIsNamed("Weights.bin", empty: false);
    }

    private static void ARewrittenPartIsNamed(string part, bool empty)
    {
        var (_, served, _) = Models.Value;
        // The zip stays valid (its CRCs are rewritten): only RetriKT's own checksums can tell.
        var damaged = Rewrite(served, part, bytes => empty ? [] : Flip(bytes));
        var plain = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(new MemoryStream(damaged), out _));
        var cause = ModelFiles.Innermost(plain);
        Assert.IsType<InvalidDataException>(cause);
        Assert.Contains($"/{part}' is damaged or was modified", cause.Message);
        var verified = Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadVerified(new MemoryStream(damaged), "model.zip", out _));
        Assert.StartsWith("model.zip: model.zip part '", verified.Message);
        Assert.Contains(part, verified.Message);
        Assert.DoesNotContain("target of an invocation", verified.Message);
        Assert.True(verified.Message.Length < 400 && verified.Message.All(c => !char.IsControl(c)), verified.Message);

        static byte[] Flip(byte[] bytes)
        {
            bytes[bytes.Length / 2] ^= 0x10;
            return bytes;
        }
    }

    /// <summary>
    /// ML.NET's reader of the input schema (the zip's 'Schema' part) retries a read that returns nothing, so a length in
    /// that part pointing past its end, in a valid zip, hung Model.Load forever, and LoadVerified (whose CRC check passes)
    /// and the hosting pool's reload with it. Here the dimension count of the Label's KeyValues vector (a key label in the
    /// saved schema, as a model saved with the keyed training data's schema has) is raised past the part's end: a verified
    /// load now fails at once, in one line naming the file and the part.
    /// </summary>
    [SharedDataFact]
    public void ASchemaPartWhoseLengthPointsPastItsEndFailsInOneLineInsteadOfHanging()
    {
        var ml = new MLContext(seed: 1);
        var train = TestData.Sst2Train(ml);
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(train);
        var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            Epochs = 1, HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 24, NeighborCount = 4, Seed = 3,
        }).Fit(keyed);
        using var saved = new MemoryStream();
        ml.Model.Save(student, keyed.Schema, saved);
        var damaged = Rewrite(saved.ToArray(), "Schema", bytes =>
        {
            // The KeyValues codec: "VBuffer", then its inner codec "TextSpan" with no parameters, then the dimension count.
            int inner = bytes.AsSpan().IndexOf("\u0008TextSpan"u8);
            Assert.True(inner > 0, "no TextSpan codec in the Schema part");
            int count = inner + 1 + 8 + 1;
            Assert.Equal(1, BitConverter.ToInt32(bytes, count));
            BitConverter.TryWriteBytes(bytes.AsSpan(count), 32_513);
            return bytes;
        });

        var load = Task.Run(() => Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadVerified(new MemoryStream(damaged), "model.zip", out _)));
        Assert.True(load.Wait(TimeSpan.FromSeconds(60)), "LoadVerified did not return within 60 s");
        var error = load.Result;
        Assert.StartsWith("model.zip: part 'Schema' cannot be read (", error.Message);
        Assert.True(error.Message.Length < 400 && error.Message.All(c => !char.IsControl(c)), error.Message);

        // The saved file itself still loads, schema and all.
        using var loaded = Assert.IsType<RetrievalClassifierTransformer>(new MLContext().Model.LoadVerified(new MemoryStream(saved.ToArray()), "model.zip", out var schema));
        Assert.True(schema["Label"].Annotations.Schema.GetColumnOrNull("KeyValues").HasValue);
    }

    private sealed class LabelledRow
    {
        public string Text { get; set; } = "";
        public string Label { get; set; } = "";
    }

    /// <summary>
    /// LoadWithTeacherSearch, the load for a model.zip moved to another machine beside its teacher, read the file with a
    /// plain Model.Load: no zip CRC check, and a Schema part whose length points past its end (the damage of the test
    /// above) hung it forever. It now verifies the file first, as LoadVerified does, and fails in one line naming it.
    /// </summary>
    [Fact]
    public async Task LoadWithTeacherSearchVerifiesTheFileInsteadOfHangingOnADamagedSchemaPart()
    {
        using var temp = new TempDir("retrikt-teacher-search-verify-");
        var ml = new MLContext(seed: 1);
        var rows = ml.Data.LoadFromEnumerable(new[] { new LabelledRow { Text = "a fine film", Label = "pos" }, new LabelledRow { Text = "a dull film", Label = "neg" } });
        var keys = ml.Transforms.Conversion.MapValueToKey("Label").Fit(rows);
        using var saved = new MemoryStream();
        ml.Model.Save(keys, keys.Transform(rows).Schema, saved);
        var damaged = Rewrite(saved.ToArray(), "Schema", bytes =>
        {
            int inner = bytes.AsSpan().IndexOf("\u0008TextSpan"u8);
            Assert.True(inner > 0, "no TextSpan codec in the Schema part");
            BitConverter.TryWriteBytes(bytes.AsSpan(inner + 1 + 8 + 1), 32_513);
            return bytes;
        });
        var path = temp.File("model.zip");
        File.WriteAllBytes(path, damaged);

        var load = Task.Run(() => Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadWithTeacherSearch(path, out _)));
        Assert.True(await Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(60))) == load, "LoadWithTeacherSearch did not return within 60 s");
        Assert.StartsWith($"{path}: part 'Schema' cannot be read (", (await load).Message);

        // The saved file loads through it as before.
        File.WriteAllBytes(path, saved.ToArray());
        Assert.IsAssignableFrom<ITransformer>(new MLContext().Model.LoadWithTeacherSearch(path, out var schema));
        Assert.True(schema["Label"].Annotations.Schema.GetColumnOrNull("KeyValues").HasValue);
    }

    /// <summary>
    /// <paramref name="model"/> with the one entry named <paramref name="part"/> (its full name, or its last segments)
    /// replaced by <paramref name="change"/>(its bytes), in a valid zip: only RetriKT's own checksums can tell.
    /// </summary>
    internal static byte[] Rewrite(byte[] model, string part, Func<byte[], byte[]> change)
    {
        using var buffer = new MemoryStream();
        buffer.Write(model);
        using (var zip = new System.IO.Compression.ZipArchive(buffer, System.IO.Compression.ZipArchiveMode.Update, leaveOpen: true))
        {
            var entry = zip.Entries.Single(e => e.FullName == part || e.FullName.EndsWith("/" + part, StringComparison.Ordinal));
            byte[] bytes;
            using (var read = entry.Open()) { using var copy = new MemoryStream(); read.CopyTo(copy); bytes = copy.ToArray(); }
            var name = entry.FullName;
            entry.Delete();
            using var write = zip.CreateEntry(name).Open();
            write.Write(change(bytes));
        }
        return buffer.ToArray();
    }

    private sealed record Outcome(int Identical, int Failed, int NamedRetriKTPart, TimeSpan Elapsed, int LoaderNameDamage = 0)
    {
        public override string ToString() => $"{Identical} identical, {Failed} failed ({NamedRetriKTPart} naming a RetriKT part, " +
                                             $"{LoaderNameDamage} in ML.NET's loader-assembly lookup) in {Elapsed.TotalSeconds:F1} s";
    }

    /// <summary>The failure is ML.NET's Assembly.Load of a loader-assembly name read from a damaged part header.</summary>
    private static bool LoaderNameDamage(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
            if (x is System.Globalization.CultureNotFoundException or FileLoadException or FileNotFoundException && x.StackTrace?.Contains("Assembly.Load") == true)
                return true;
        return false;
    }

    private static Outcome Fuzz(byte[] original, int count, int seed, Func<byte[], string> predict, Func<Exception, string> message)
    {
        var clock = Stopwatch.StartNew();
        var expected = predict(original);
        var regions = Regions(original);
        var random = new Random(seed);
        int identical = 0, failed = 0, named = 0, loaderName = 0;
        for (int i = 0; i < count; i++)
        {
            var damaged = (byte[])original.Clone();
            string what;
            if (i % 8 == 7)
            {
                int length = random.Next(original.Length);
                damaged = damaged[..length];
                what = $"truncated to {length} of {original.Length} bytes";
            }
            else
            {
                // A region (an entry's header + data, or the central directory) first, then a byte in it: every part gets hit.
                var (start, end) = regions[random.Next(regions.Count)];
                int offset = random.Next(start, end), bit = random.Next(8);
                damaged[offset] ^= (byte)(1 << bit);
                what = $"bit {bit} of byte {offset} flipped";
            }
            string result;
            try
            {
                result = predict(damaged);
            }
            catch (Exception e) when (LoaderNameDamage(e))
            {
                // ML.NET resolves a part's loader assembly from the name in the part's header (Assembly.Load) before any
                // RetriKT code runs, and its error quotes the damaged name. The load still fails — never a silently
                // different model — and LoadVerified (checksums first, next test) reports it as one clean line.
                failed++;
                loaderName++;
                continue;
            }
            catch (Exception e)
            {
                var text = message(e);
                Assert.False(string.IsNullOrWhiteSpace(text), $"{what}: empty message from {e.GetType().Name}");
                Assert.True(text.Length < 1000, $"{what}: {text.Length}-character message");
                Assert.DoesNotContain("target of an invocation", text);
                Assert.True(text.All(c => !char.IsControl(c) && c != '\uFFFD'), $"{what}: message with binary: {Escape(text)}");
                failed++;
                if (new[] { "Weights.bin", "Store.bin", "Vocabulary.txt", "Model.key", "Checksums.bin" }.Any(text.Contains)) named++;
                continue;
            }
            Assert.True(expected == result, $"{what}: loaded as a different model.\nexpected {expected}\nfound    {result}");
            identical++;
        }
        var outcome = new Outcome(identical, failed, named, clock.Elapsed, loaderName);
        Console.WriteLine($"model file fuzz ({original.Length} bytes): {outcome}");
        return outcome;
    }

    /// <summary>Scores and labels of the input rows, as text compared exactly.</summary>
    private static string Predict(MLContext ml, ITransformer model, IDataView input, bool served)
    {
        try
        {
            var rows = served
                ? ml.Data.CreateEnumerable<Output>(model.Transform(input), reuseRowObject: false).Select(o => o.PredictedLabel + ":" + string.Join(",", o.Score.Select(s => s.ToString("R"))))
                : ml.Data.CreateEnumerable<ScoreOnly>(model.Transform(input), reuseRowObject: false).Select(o => string.Join(",", o.Score.Select(s => s.ToString("R"))));
            return string.Join(" | ", rows);
        }
        finally
        {
            (model as IDisposable)?.Dispose();
        }
    }

    private sealed class ScoreOnly
    {
        public float[] Score { get; set; } = [];
    }

    /// <summary>[start, end) of each local entry (header + data) and of the central directory, found by their signatures.</summary>
    private static List<(int Start, int End)> Regions(byte[] zip)
    {
        var starts = new List<int>();
        for (int i = 0; i + 4 <= zip.Length; i++)
            if (zip[i] == 'P' && zip[i + 1] == 'K' && ((zip[i + 2] == 3 && zip[i + 3] == 4) || (zip[i + 2] == 1 && zip[i + 3] == 2 && starts.Count > 0 && zip[starts[^1] + 2] == 3)))
                starts.Add(i);
        starts.Add(zip.Length);
        return starts.Zip(starts.Skip(1)).Where(r => r.Second > r.First).ToList();
    }

    private static string Escape(string text) => new(text.Take(200).Select(c => char.IsControl(c) ? '?' : c).ToArray());
}
