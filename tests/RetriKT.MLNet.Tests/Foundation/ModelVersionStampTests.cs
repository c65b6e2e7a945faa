using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Student;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// The format version ML.NET stamps in a component's Model.key header: a model saved by a newer RetriKT.MLNet was
/// refused as "Error during class instantiation" (ML.NET's wrapper around its own version check, whose message names
/// neither the component nor the versions); it is refused in one line naming the part and both versions. A stamp
/// changed to an older version the library still reads loaded the body as that version: a student without its
/// term-match weight μ, a different model that predicted. The stamp is now checked with the component's other parts.
/// </summary>
public class ModelVersionStampTests
{
    private static readonly Lazy<(byte[] Saved, IDataView Input)> Student = new(() =>
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 11));
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data);
        using var student = ml.MulticlassClassification.Trainers.RetrievalClassifier(new RetrievalClassifierTrainer.Options
        {
            HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 2, BatchSize = 8, Seed = 3,
            RetrievalWeight = 0.3, LexicalRetrievalWeight = 0.4, LexicalNeighborCount = 4,
        }).Fit(keyMap.Transform(data));
        Assert.Equal(0.4, student.LexicalRetrievalWeight);
        using var buffer = new MemoryStream();
        ml.Model.Save(student, data.Schema, buffer);
        return (buffer.ToArray(), data);
    });

    [Theory]
    [InlineData(0x00010001u)]
    [InlineData(0x00010002u)]
    [InlineData(0x00010004u)]
    public void AStudentWhoseStampWasDamagedToAnOlderVersionIsRefused(uint older)
    {
        var damaged = Restamp(Student.Value.Saved, "RKTRCLSF", 0x00010005u, older);
        var plain = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(new MemoryStream(damaged), out _));
        var cause = ModelFiles.Innermost(plain);
        Assert.IsType<InvalidDataException>(cause);
        Assert.Contains("Model.key", cause.Message);
        Assert.Contains($"{older:x8}", cause.Message);
        Assert.Contains("00010005", cause.Message);
        var verified = Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadVerified(new MemoryStream(damaged), "model.zip", out _));
        Assert.StartsWith("model.zip: model.zip part '", verified.Message);
    }

    [Fact]
    public void AStudentStampedWithANewerVersionIsRefusedInOneLine()
    {
        var newer = Restamp(Student.Value.Saved, "RKTRCLSF", 0x00010005u, 0x00010006u);
        var e = Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadVerified(new MemoryStream(newer), "model.zip", out _));
        // Was "model.zip: Error during class instantiation".
        Assert.StartsWith("model.zip: model.zip part '", e.Message);
        Assert.EndsWith("/Model.key' cannot be read: RetriKTRetrievalClsf format version 00010006 (readable from 00010006) is newer than this " +
                        "RetriKT.MLNet reads (00010001 to 00010005): load it with the RetriKT.MLNet version that saved it, or a later one.", e.Message);
        var plain = ModelFiles.Innermost(Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(new MemoryStream(newer), out _)));
        Assert.IsType<InvalidDataException>(plain);
        Assert.Equal(e.Message["model.zip: ".Length..], plain.Message);
    }

    /// <summary>
    /// One flipped bit in the written version (below the readable one) is caught by ML.NET's own header check, whose
    /// "Corrupt file header" reached the user as "Error during class instantiation", its wrapper's message.
    /// </summary>
    [Fact]
    public void AStampDamagedInOneBitIsReportedWithMLNetsCauseNotItsWrapper()
    {
        var damaged = Restamp(Student.Value.Saved, "RKTRCLSF", 0x00010005u, 0x00010004u, readableToo: false);
        var verified = Assert.Throws<InvalidDataException>(() => new MLContext().Model.LoadVerified(new MemoryStream(damaged), "model.zip", out _));
        Assert.Equal("model.zip: Corrupt file header", verified.Message);
        var plain = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(new MemoryStream(damaged), out _));
        Assert.Equal("Corrupt file header", ModelFiles.Describe(plain));
    }

    [Fact]
    public void AnUndamagedStudentStillLoadsAndPredictsAsSaved()
    {
        var (saved, input) = Student.Value;
        var ml = new MLContext(seed: 1);
        using var loaded = Assert.IsType<RetrievalClassifierTransformer>(ml.Model.LoadVerified(new MemoryStream(saved), "model.zip", out _));
        Assert.Equal(0.4, loaded.LexicalRetrievalWeight);
        Assert.Equal(40, loaded.Transform(input).GetColumn<float[]>("Score").Count());
    }

    /// <summary>
    /// ML.NET loads a component's loader assembly by the name stored in Model.key. Stored with its version
    /// ("RetriKT.MLNet, Version=0.1.0.0"), a model saved by one release failed to load in an earlier one with "Could not
    /// load file or assembly ... cannot find the file", although the assembly was there and the format was one it reads.
    /// The name is stored without a version; the format version decides, with its own message.
    /// </summary>
    [Fact]
    public void AModelNamesItsLoaderAssemblyWithoutAVersion()
    {
        var (saved, input) = Student.Value;
        using (var zip = new ZipArchive(new MemoryStream(saved), ZipArchiveMode.Read))
        {
            var header = zip.Entries.Where(e => e.Name == "Model.key").Select(e =>
            {
                using var data = e.Open();
                using var copy = new MemoryStream();
                data.CopyTo(copy);
                return copy.ToArray();
            }).Single(b => b.AsSpan().IndexOf(Encoding.Unicode.GetBytes("RetriKT.MLNet")) >= 0 || b.AsSpan().IndexOf("RetriKT.MLNet"u8) >= 0);
            Assert.True(header.AsSpan().IndexOf(Encoding.Unicode.GetBytes("RetriKT.MLNet, Version=")) < 0 && header.AsSpan().IndexOf("RetriKT.MLNet, Version="u8) < 0,
                "the student's Model.key names its loader assembly with a version");
        }
        var ml = new MLContext(seed: 1);
        using var loaded = Assert.IsType<RetrievalClassifierTransformer>(ml.Model.LoadVerified(new MemoryStream(saved), "model.zip", out _));
        Assert.Equal(40, loaded.Transform(input).GetColumn<float[]>("Score").Count());
    }

    /// <summary>
    /// <paramref name="model"/> with the version written after the model signature <paramref name="signature"/> in its
    /// Model.key header changed from <paramref name="from"/> to <paramref name="to"/>, in a valid zip (CRCs rewritten).
    /// </summary>
    internal static byte[] Restamp(byte[] model, string signature, uint from, uint to, bool readableToo = true)
    {
        var pattern = new byte[12];
        Encoding.ASCII.GetBytes(signature).CopyTo(pattern, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(pattern.AsSpan(8), from);
        string part;
        using (var zip = new ZipArchive(new MemoryStream(model), ZipArchiveMode.Read))
            part = zip.Entries.Where(e => e.Name == "Model.key").Single(e =>
            {
                using var data = e.Open();
                using var copy = new MemoryStream();
                data.CopyTo(copy);
                return copy.ToArray().AsSpan().IndexOf(pattern) >= 0;
            }).FullName;
        return ModelFileIntegrityTests.Rewrite(model, part, bytes =>
        {
            int at = bytes.AsSpan().IndexOf(pattern);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 8), to);
            if (readableToo) BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at + 12), to);
            return bytes;
        });
    }
}
