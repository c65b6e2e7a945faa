using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

// One registration per persisted component. ML.NET finds these by the loader signature stored in model.zip and
// calls the matching static Create below (the LoadableClass "loader type" is this class, so components themselves
// never see ModelLoadContext).
[assembly: LoadableClass(typeof(TextTokenizingTransformer), typeof(Loaders), null, typeof(SignatureLoadModel),
    "RetriKT Text Tokenizer", "RetriKTTextTokenizer")]
[assembly: LoadableClass(typeof(KnowledgeRetrieverTransformer), typeof(KnowledgeRetrieverLoader), null, typeof(SignatureLoadModel),
    "RetriKT Knowledge Retriever", "RetriKTRetriever")]

namespace RetriKT.MLNet.Bridge;

/// <summary>Static factories ML.NET's component catalog calls to restore our transformers from model.zip.</summary>
internal static class Loaders
{
    private static TextTokenizingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => TextTokenizingTransformer.Load(ModelReader.Open(env, ctx, TextTokenizingTransformer.Format));
}

/// <summary>ML.NET looks up a method named <c>Create</c> by parameters, so each component needs its own loader class.</summary>
internal static class KnowledgeRetrieverLoader
{
    private static KnowledgeRetrieverTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => KnowledgeRetrieverTransformer.Load(ModelReader.Open(env, ctx, KnowledgeRetrieverTransformer.Format));
}
