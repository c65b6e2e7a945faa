using System.IO.Compression;
using RetriKT.MLNet.Hosting.Tests.Infrastructure;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.WebApi;

namespace RetriKT.MLNet.Hosting.Tests;

/// <summary>
/// Both loaders read a model.zip whole into one byte array before they verify and load it, and a byte array holds at
/// most 2 GiB: a model past that (a student whose knowledge store passes it, which saves and loads from a path since
/// the store format was mended) could not be served: File.ReadAllBytes failed with "The file is too long", and a
/// download at the buffer limit. The copy now goes to a temporary file of its own past 1 GiB (ModelSnapshot).
/// </summary>
public class LargeModelFileTests
{
    /// <summary>A copy of the model at <paramref name="source"/> with a stored (uncompressed) part of <paramref name="padding"/> zero bytes, which ML.NET never reads.</summary>
    private static void Padded(string source, string target, long padding)
    {
        using var input = ZipFile.OpenRead(source);
        using var output = ZipFile.Open(target, ZipArchiveMode.Create);
        foreach (var entry in input.Entries)
        {
            using var from = entry.Open();
            using var to = output.CreateEntry(entry.FullName, CompressionLevel.Optimal).Open();
            from.CopyTo(to);
        }
        using var pad = output.CreateEntry("Padding/zeros.bin", CompressionLevel.NoCompression).Open();
        var zeros = new byte[1 << 20];
        for (long written = 0; written < padding; written += zeros.Length) pad.Write(zeros, 0, (int)Math.Min(zeros.Length, padding - written));
    }

    [SharedDataFact]
    public void AModelFileOfMoreThanTwoGibibytesIsServed()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "large-file");
        var answers = TestModels.SequentialAnswers(v1);
        var modelPath = dir.File("model.zip");
        Padded(v1, modelPath, (2L << 30) + (1 << 20));
        Assert.True(new FileInfo(modelPath).Length > int.MaxValue);

        using var host = new PoolHost(b => b.FromFile(modelPath, watchForChanges: false));
        foreach (var text in TestModels.Sentences.Take(5))
        {
            var p = host.Pool.Predict(new TextInput { Text = text });
            Assert.True(answers[text].Matches(p.PredictedLabel, p.Score), $"'{text}': {p.PredictedLabel}");
        }
        Assert.Null(host.Pool.GetLastLoadError());
    }

    /// <summary>A copy that goes to its temporary file is the same model, and a damaged one is refused from there too.</summary>
    [SharedDataFact]
    public async Task ASnapshotPastTheMemoryLimitLoadsTheSameModelAndDeletesItsFile()
    {
        using var dir = new TempDir();
        var (v1, _) = TestModels.Save(dir.Path, "spilled");
        var bytes = await File.ReadAllBytesAsync(v1);
        using var inMemory = await ModelSnapshot.CopyAsync(new MemoryStream(bytes), CancellationToken.None);
        long limit = ModelSnapshot.SpillAboveBytes;
        ModelSnapshot.SpillAboveBytes = 1000; // a spilled copy answers as an in-memory one, so other tests running now are unaffected
        ModelSnapshot spilled, damaged;
        try
        {
            spilled = await ModelSnapshot.CopyAsync(new MemoryStream(bytes), CancellationToken.None);
            damaged = await ModelSnapshot.CopyAsync(new MemoryStream(TestModels.Damaged(bytes)), CancellationToken.None);
        }
        finally { ModelSnapshot.SpillAboveBytes = limit; }
        Assert.Null(inMemory.SpillFile);
        var spillFile = Assert.IsType<string>(spilled.SpillFile);
        Assert.True(File.Exists(spillFile));
        Assert.Equal(inMemory.Sha256, spilled.Sha256);
        Assert.Equal(bytes.Length, spilled.Length);
        foreach (var snapshot in new[] { inMemory, spilled })
            for (int read = 0; read < 2; read++) // each reader starts at the beginning
            {
                using var stream = snapshot.Open();
                var copy = new MemoryStream();
                stream.CopyTo(copy);
                Assert.Equal(bytes, copy.ToArray());
            }
        using (damaged)
        {
            using var stream = damaged.Open();
            Assert.Throws<InvalidDataException>(() => RetriKT.MLNet.Common.ModelZip.Verify(stream, name: null));
        }
        spilled.Dispose();
        Assert.False(File.Exists(spillFile), "the spilled copy's file outlived its snapshot");
    }
}
