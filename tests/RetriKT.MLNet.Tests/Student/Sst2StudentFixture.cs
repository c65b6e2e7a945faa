using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Student;

/// <summary>
/// One retrieval classifier trained on SST-2 16-shot (seed 13) train split, λ/τ tuned on its 32-row dev split, shared
/// by the student tests so the suite trains it once. The official SST-2 dev set (872 rows) is the test set.
/// </summary>
public sealed class Sst2StudentFixture : IDisposable
{
    private readonly Lazy<(ITransformer Model, RetrievalClassifierTransformer Student)> _trained;

    public Sst2StudentFixture()
    {
        _trained = new(Train);
    }

    public MLContext MlContext { get; } = new(seed: 1);

    public static RetrievalClassifierTrainer.Options DefaultOptions(IDataView? validation) => new()
    {
        ValidationSet = validation,
        TeacherParameterCount = 1_300_000_000,
        NeighborsColumnName = "Neighbors",
    };

    public ITransformer Model => _trained.Value.Model;
    public RetrievalClassifierTransformer Student => _trained.Value.Student;

    public IDataView Train16() => TestData.Sst2Train(MlContext);
    public IDataView FewShotDev() => MlContext.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "k-shot", "16-13", "dev.tsv")));
    public IDataView OfficialDev() => MlContext.Data.LoadFromEnumerable(TestData.ReadSingleSentenceTsv(SharedData.Path("data", "SST-2", "dev.tsv")));

    public EstimatorChain<RetrievalClassifierTransformer> Pipeline(RetrievalClassifierTrainer.Options options)
        => MlContext.Transforms.Conversion.MapValueToKey("Label")
            .Append(MlContext.MulticlassClassification.Trainers.RetrievalClassifier(options));

    /// <summary>The fitted MapValueToKey step of the pipeline (maps string labels "0"/"1" to keys).</summary>
    public ITransformer KeyMap => ((IEnumerable<ITransformer>)Model).First();

    private (ITransformer, RetrievalClassifierTransformer) Train()
    {
        // The dev split goes through the same MapValueToKey, so its labels are keys with the same names.
        var keyMap = MlContext.Transforms.Conversion.MapValueToKey("Label").Fit(Train16());
        var options = DefaultOptions(keyMap.Transform(FewShotDev()));
        var model = Pipeline(options).Fit(Train16());
        return (model, model.LastTransformer);
    }

    public void Dispose()
    {
        if (_trained.IsValueCreated) _trained.Value.Student.Dispose();
    }
}
