using Microsoft.ML;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// The sentence-embedding estimator's shape promises what its transformer gives: the output column carries the encoder's
/// fingerprint annotation (what a knowledge retriever checks a store against). The shape left it out, so a pipeline
/// checked by its shape saw a column without provenance where Transform's had one.
/// </summary>
public class SentenceEmbeddingShapeTests
{
    [SharedDataFact]
    public void TheEstimatorsShapeHasTheAnnotationsOfTheTransformersColumn()
    {
        var ml = new MLContext(seed: 1);
        var encoder = ManagedBertSentenceEncoder.Load(SharedData.Path("models", "hf-tiny-random-bert"));
        var data = ml.Data.LoadFromEnumerable(new[] { new { Text = "a gorgeous, witty film" } });
        var estimator = ml.RetriKT().SentenceEmbedding(encoder);

        var promised = Assert.Single(estimator.GetOutputSchema(SchemaShapes.Of(data.Schema)), c => c.Name == "Features");
        var given = Assert.Single(SchemaShapes.Of(estimator.Fit(data).GetOutputSchema(data.Schema)), c => c.Name == "Features");
        Assert.Equal((given.Kind, given.ItemType, given.IsKey), (promised.Kind, promised.ItemType, promised.IsKey));
        Assert.Contains(given.Annotations, a => a.Name == EncoderProvenance.AnnotationName);
        Assert.Equal(given.Annotations.Select(a => (a.Name, a.Kind, a.ItemType)), promised.Annotations.Select(a => (a.Name, a.Kind, a.ItemType)));
    }
}
