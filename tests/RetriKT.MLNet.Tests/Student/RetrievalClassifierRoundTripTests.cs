using System.IO.Compression;
using Microsoft.ML;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

public class RetrievalClassifierRoundTripTests(Sst2StudentFixture fixture) : IClassFixture<Sst2StudentFixture>
{
    [SharedDataFact]
    public void TrainedPipelineRoundTripsAcrossProcessesWithIdenticalScores()
    {
        var ml = fixture.MlContext;
        var rows = TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")).Take(40).ToList();
        var input = ml.Data.LoadFromEnumerable(rows);

        // Transform, PredictionEngine and re-save in a child process must reproduce this process's outputs exactly.
        using var result = CrossProcess.RoundTrip(ml, fixture.Model, input, engineContract: "retrieval-classifier");

        Assert.Contains(typeof(RetrievalClassifierTransformer).FullName!, result.LoadedTypes);
        Assert.Equal(41, result.Transform.Count);
        using var zip = ZipFile.OpenRead(result.ModelPath);
        foreach (var stream in new[] { "Weights.bin", "Store.bin", "Vocabulary.txt" })
            Assert.Contains(zip.Entries, e => e.FullName.EndsWith(stream, StringComparison.Ordinal));

        // Loaded in this process too: same λ, τ, store and parameter count as the trained student.
        var loaded = ml.Model.Load(result.ModelPath, out _);
        var student = ((IEnumerable<ITransformer>)loaded).OfType<RetrievalClassifierTransformer>().Single();
        try
        {
            Assert.Equal(fixture.Student.RetrievalWeight, student.RetrievalWeight);
            Assert.Equal(fixture.Student.Temperature, student.Temperature);
            Assert.Equal(fixture.Student.Store.Count, student.Store.Count);
            Assert.Equal(fixture.Student.ParameterCount, student.ParameterCount);
            Assert.Equal(fixture.Student.TeacherParameterCount, student.TeacherParameterCount);
            var expected = fixture.Student.Predict(rows[0].Text);
            var actual = student.Predict(rows[0].Text);
            Assert.Equal(expected.Scores, actual.Scores);
        }
        finally
        {
            student.Dispose();
        }
    }
}
